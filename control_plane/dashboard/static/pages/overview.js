// Overview (docs/architecture.md "Analytics"): the figures of GET /api/analytics/metrics, the trend of
// GET /api/analytics/trends over the chosen range by day or hour, per-agent and per-group bars
// (GET /api/analytics/agents|groups), and active calls against capacity (GET /api/analytics/realtime).
// While the page is open, the live feed's stats frames keep "Active calls" current (no polling).
import { api, ApiError } from "../api.js";
import { barChart, capacityChart, lineChart } from "../charts.js";
import { liveFeed } from "../live.js";
import { errorBox, filterBar, fmtDuration, fmtPercent, h, pageHeader, section } from "../ui.js";

const DAY = 86400000;
const isoDay = (d) => d.toISOString().slice(0, 10);
const nameOf = (r, kind) => r.name ?? `${kind} #${r.agent_id ?? r.group_id} (deleted)`;

function card(label, value, note) {
  return h(
    "div",
    { class: "metric" },
    h("div", { class: "metric-label" }, label),
    h("div", { class: "metric-value", "data-metric": label }, value),
    note ? h("div", { class: "metric-note" }, note) : null,
  );
}

// A bucket's label: "11-29" for a day, "11-29 14:00" for an hour (the tenant's local time).
function bucketLabel(bucket, interval) {
  if (interval === "hour") return `${bucket.local_start.slice(5, 10)} ${bucket.local_start.slice(11, 16)}`;
  return String(bucket.date).slice(5);
}

function later(promise, draw) {
  const box = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  promise.then(
    (answer) => box.replaceChildren(draw(answer)),
    (err) => box.replaceChildren(errorBox(err)),
  );
  return box;
}

function trendCharts(answer) {
  const points = (key) => answer.data.map((b) => ({ label: bucketLabel(b, answer.interval), value: b[key] }));
  const per = answer.interval === "hour" ? "hour" : "day";
  return h(
    "div",
    { class: "chart-grid" },
    lineChart(`Calls per ${per}`, points("calls"), { name: "calls", compare: { name: "answered", points: points("answered") }, whole: true }),
    lineChart(`Success rate per ${per}`, points("success_rate"), { format: fmtPercent, max: 1 }),
    lineChart(`Average answered duration per ${per}`, points("avg_duration"), { format: fmtDuration, floor: 60 }),
  );
}

function entityCharts(answer, kind) {
  const rows = answer.data;
  if (!rows.length) return h("p", { class: "empty" }, kind === "Agent" ? "No voice agents yet." : "No agent groups yet.");
  const bars = (key) => rows.map((r) => ({ label: nameOf(r, kind), value: r[key] }));
  return h(
    "div",
    { class: "chart-grid" },
    barChart(`Calls per ${kind.toLowerCase()}`, bars("calls"), { whole: true }),
    barChart(`Success rate per ${kind.toLowerCase()}`, bars("success_rate"), { format: fmtPercent, max: 1 }),
    barChart(`Average answered duration per ${kind.toLowerCase()}`, bars("avg_duration"), { format: fmtDuration, floor: 60 }),
  );
}

function capacityCharts(now) {
  const agents = now.agents.map((a) => ({ label: a.name, active: a.active_calls, capacity: a.capacity }));
  const groups = now.groups.map((g) => ({ label: g.name, active: g.active_calls, capacity: g.capacity }));
  return h(
    "div",
    { class: "chart-grid" },
    capacityChart("Active calls per agent against capacity", agents),
    capacityChart("Active calls per group against capacity", groups),
    lineChart(
      `Calls started per minute, last ${now.minutes} minutes`,
      now.per_minute.map((m) => ({ label: new Date(m.minute).toTimeString().slice(0, 5), value: m.calls })),
      { whole: true },
    ),
  );
}

export async function render({ query, navigate }) {
  const today = new Date();
  const interval = query.interval === "hour" ? "hour" : "day";
  const range = {
    start_date: query.start_date || isoDay(new Date(today.getTime() - (interval === "hour" ? 1 : 13) * DAY)),
    end_date: query.end_date || isoDay(today),
  };
  const filters = filterBar(
    [
      { name: "start_date", label: "From day", type: "date", value: range.start_date },
      { name: "end_date", label: "To day", type: "date", value: range.end_date },
      {
        name: "interval",
        label: "Trend by",
        type: "select",
        value: interval,
        options: [
          { value: "day", label: "Day" },
          { value: "hour", label: "Hour (up to 31 days)" },
        ],
      },
    ],
    (v) => navigate("/overview", v),
    { submitLabel: "Show" },
  );

  const [metrics, trend] = await Promise.allSettled([api.get("/api/analytics/metrics", range), api.get("/api/analytics/trends", { ...range, interval })]);
  // A range the API refuses (end before start, too long; hours over 31 days) names its field.
  const refused = [metrics, trend].filter((r) => r.status === "rejected").map((r) => r.reason);
  for (const err of refused) if (!(err instanceof ApiError)) throw err;
  if (refused.length) filters.setErrors(refused.flatMap((e) => e.fieldErrors), refused[0].message);
  const m = metrics.status === "fulfilled" ? metrics.value : {};
  const trends = trend.status === "fulfilled" ? trend.value : null;
  const active = card("Active calls", String(m.active_calls ?? "—"), "now, from the live feed");
  const window = m.window ? `${m.window.start_date} to ${m.window.end_date} (${m.window.timezone})` : "";
  const cards = h(
    "div",
    { class: "metrics" },
    card("Calls today", String(m.calls_today ?? "—")),
    card("Success rate", fmtPercent(m.success_rate), "answered / finished, in the range"),
    card("Average duration", fmtDuration(m.avg_duration), "of answered calls, in the range"),
    active,
    card("Calls in the range", String(m.total_calls ?? "—"), window),
  );

  // Active calls change between page loads: the feed's stats frames (every couple of seconds) say so,
  // and when the count changes the capacity charts are read again (once per change, no polling).
  const value = active.querySelector(".metric-value");
  const now = h("div", {});
  const readNow = () => now.replaceChildren(later(api.get("/api/analytics/realtime", { minutes: 15 }), capacityCharts));
  readNow();
  let shown = m.active_calls;
  const feed = liveFeed({
    onMessage(message) {
      if (message.type !== "stats") return;
      value.textContent = String(message.active_calls);
      if (message.active_calls !== shown) {
        shown = message.active_calls;
        readNow();
      }
    },
    onState() {},
  });

  const node = h(
    "div",
    {},
    pageHeader("Overview"),
    cards,
    section(null, filters.el),
    section("Trend", trends ? trendCharts(trends) : h("p", { class: "muted" }, "No trend for this range.")),
    section("Now: active calls and capacity", now),
    section("Agents", later(api.get("/api/analytics/agents", range), (a) => entityCharts(a, "Agent"))),
    section("Groups", later(api.get("/api/analytics/groups", range), (g) => entityCharts(g, "Group"))),
  );
  return { node, dispose: () => feed.stop() };
}
