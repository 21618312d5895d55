// Call records with every filter the API takes, their summary, and the export buttons.
import { api, cached } from "../api.js";
import { exportControls } from "../exports.js";
import { filterBar, fmtDuration, fmtPercent, fmtTime, h, later, link, pageHeader, pager, section, statusBadge, table } from "../ui.js";

export const RECORD_FILTERS = ["agent_id", "group_id", "status", "direction", "from", "to", "start_date", "end_date", "min_duration", "max_duration"];

export async function render({ query, navigate }) {
  const options = await cached("/api/call-records/filters/options");
  const pick = (list) => [{ value: "", label: "Any" }, ...list.map((x) => (typeof x === "object" ? { value: x.id, label: x.name } : { value: x, label: x }))];
  const agentName = Object.fromEntries(options.agents.map((a) => [a.id, a.name]));
  const groupName = Object.fromEntries(options.groups.map((g) => [g.id, g.name]));
  const filters = filterBar(
    [
      { name: "from", label: "From (part of the number)", value: query.from, type: "search" },
      { name: "to", label: "To (part of the number)", value: query.to, type: "search" },
      { name: "status", label: "Status", type: "select", value: query.status || "", options: pick(options.statuses) },
      { name: "direction", label: "Direction", type: "select", value: query.direction || "", options: pick(options.directions) },
      { name: "agent_id", label: "Agent", type: "select", value: query.agent_id || "", options: pick(options.agents) },
      { name: "group_id", label: "Group", type: "select", value: query.group_id || "", options: pick(options.groups) },
      { name: "start_date", label: "From day", type: "date", value: query.start_date },
      { name: "end_date", label: "To day", type: "date", value: query.end_date },
      { name: "min_duration", label: "Min duration (s)", type: "number", min: 0, value: query.min_duration },
      { name: "max_duration", label: "Max duration (s)", type: "number", min: 0, value: query.max_duration },
      {
        name: "sort",
        label: "Sort",
        type: "select",
        value: query.sort || "",
        options: [
          { value: "", label: "Newest first" },
          { value: "start_time", label: "Start time ↑" },
          { value: "-duration", label: "Longest first" },
          { value: "duration", label: "Shortest first" },
          { value: "status", label: "Status" },
        ],
      },
    ],
    (v) => navigate("/calls", v),
  );
  const filterValues = Object.fromEntries(RECORD_FILTERS.map((k) => [k, query[k]]));
  const listArea = h("div", {});
  // Errors from the API name the filter: show them next to it.
  const list = api.get("/api/call-records", { ...filterValues, sort: query.sort, page: query.page || 1, per_page: 50 });
  list.catch((err) => filters.setErrors(err.fieldErrors || [], err.message));
  const summary = later(api.get("/api/call-records/statistics/summary", filterValues), (s) =>
    h(
      "dl",
      { class: "stat-row" },
      stat("Calls", s.total),
      stat("Answered", s.answered),
      stat("Success rate", fmtPercent(s.success_rate)),
      stat("Average duration", fmtDuration(s.avg_duration)),
      stat("Total duration", fmtDuration(s.total_duration)),
    ),
  );
  listArea.append(
    later(list, (answer) =>
      h(
        "div",
        {},
        table(
          [
            { label: "Started", render: (c) => fmtTime(c.start_time || c.created_at) },
            { label: "From", render: (c) => c.from_number || "—" },
            { label: "To", render: (c) => c.to_number || "—" },
            { label: "Direction", render: (c) => c.direction || "—" },
            { label: "Agent", render: (c) => (c.agent_id ? agentName[c.agent_id] || `#${c.agent_id}` : "—") },
            { label: "Group", render: (c) => (c.group_id ? groupName[c.group_id] || `#${c.group_id}` : "—") },
            { label: "Status", render: (c) => statusBadge(c.status) },
            { label: "Duration", render: (c) => fmtDuration(c.duration), className: "num" },
            { label: "Timeline", render: (c) => link("Timeline", `#/calls/${encodeURIComponent(c.session_token)}`, { "aria-label": `Timeline of call ${c.session_token}` }) },
          ],
          answer.data,
          { caption: "Call records", empty: "No calls match these filters." },
        ),
        pager(answer.meta, (page) => navigate("/calls", { ...query, page })),
      ),
    ),
  );
  return h(
    "div",
    {},
    pageHeader("Call records"),
    section(null, filters.el),
    section("Summary", summary),
    section(null, exportControls("call-records", () => ({ ...filterValues, sort: query.sort })), listArea),
  );
}

function stat(label, value) {
  return h("div", { class: "stat" }, h("dt", {}, label), h("dd", {}, String(value)));
}
