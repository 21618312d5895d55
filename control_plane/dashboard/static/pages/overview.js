// Overview: calls today, success rate, average duration, active calls, the trend over a chosen range,
// and per-agent / per-group charts. Written against SPEC §2.7 (GET /api/analytics/metrics, /agents,
// /groups), built in another branch; until those answer, the figures come from the call statistics
// and the call-record summary the API already has, and the charts say they are not available yet.
import { api, ApiError } from "../api.js";
import { barChart, lineChart } from "../charts.js";
import { filterBar, fmtDuration, fmtPercent, h, pageHeader, section } from "../ui.js";

const DAY = 86400000;
const isoDay = (d) => d.toISOString().slice(0, 10);
const missing = (err) => err instanceof ApiError && (err.status === 404 || err.status === 405);

function card(label, value, note) {
  return h("div", { class: "metric" }, h("div", { class: "metric-label" }, label), h("div", { class: "metric-value", "data-metric": label }, value), note ? h("div", { class: "metric-note" }, note) : null);
}

function metricCards(m) {
  return h(
    "div",
    { class: "metrics" },
    card("Calls today", String(m.calls_today ?? "—")),
    card("Success rate", fmtPercent(m.success_rate), "answered / finished"),
    card("Average duration", fmtDuration(m.avg_duration)),
    card("Active calls", String(m.active_calls ?? "—")),
  );
}

async function metrics(range) {
  try {
    return { source: "analytics", data: await api.get("/api/analytics/metrics", range) };
  } catch (err) {
    if (!missing(err)) throw err;
  }
  // Fallback: what the API had before analytics.
  const [stats, summary] = await Promise.all([api.get("/api/calls/statistics"), api.get("/api/call-records/statistics/summary", range)]);
  return {
    source: "fallback",
    data: { calls_today: stats.total_today, active_calls: stats.active_calls, success_rate: summary.success_rate, avg_duration: summary.avg_duration, trends: null },
  };
}

function perEntity(path, title, range) {
  const box = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  api.get(path, range).then(
    (answer) => {
      const rows = Array.isArray(answer) ? answer : answer.data || [];
      const label = (r) => r.name || r.agent_name || r.group_name || `#${r.id ?? r.agent_id ?? r.group_id}`;
      box.replaceChildren(
        h(
          "div",
          { class: "chart-grid" },
          barChart(`${title}: calls`, rows.map((r) => ({ label: label(r), value: r.calls ?? r.total_calls ?? 0 }))),
          barChart(`${title}: success rate`, rows.map((r) => ({ label: label(r), value: r.success_rate ?? 0 })), { format: fmtPercent }),
        ),
      );
    },
    (err) => box.replaceChildren(h("p", { class: "muted" }, missing(err) ? `${title} analytics are not available on this server yet.` : err.message)),
  );
  return box;
}

export async function render({ query, navigate }) {
  const today = new Date();
  const range = {
    start_date: query.start_date || isoDay(new Date(today.getTime() - 13 * DAY)),
    end_date: query.end_date || isoDay(today),
    agent_id: query.agent_id,
    group_id: query.group_id,
  };
  const filters = filterBar(
    [
      { name: "start_date", label: "From day", type: "date", value: range.start_date },
      { name: "end_date", label: "To day", type: "date", value: range.end_date },
    ],
    (v) => navigate("/overview", v),
    { submitLabel: "Show" },
  );
  let result;
  try {
    result = await metrics(range);
  } catch (err) {
    if (err instanceof ApiError) filters.setErrors(err.fieldErrors, err.message);
    result = { source: "error", data: {} };
  }
  const m = result.data;
  const trends = Array.isArray(m.trends) ? m.trends : null;
  return h(
    "div",
    {},
    pageHeader("Overview"),
    metricCards(m),
    section(null, filters.el),
    section(
      "Trend",
      trends
        ? h(
            "div",
            { class: "chart-grid" },
            lineChart("Calls per day", trends.map((t) => ({ label: t.date.slice(5), value: t.calls }))),
            lineChart("Success rate per day", trends.map((t) => ({ label: t.date.slice(5), value: t.success_rate })), { format: fmtPercent }),
            lineChart("Average duration per day", trends.map((t) => ({ label: t.date.slice(5), value: t.avg_duration })), { format: fmtDuration }),
          )
        : h("p", { class: "muted" }, "The trend chart needs the analytics API (not available on this server yet). The figures above come from the call records."),
    ),
    section("Agents", perEntity("/api/analytics/agents", "Agents", range)),
    section("Groups", perEntity("/api/analytics/groups", "Groups", range)),
  );
}
