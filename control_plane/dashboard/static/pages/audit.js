// The webhook audit: every webhook the engines received, newest first, with its masked body.
import { api } from "../api.js";
import { badge, filterBar, fmtTime, h, later, link, pageHeader, pager, section, table } from "../ui.js";

const KINDS = ["routed", "dial_status", "session_update", "cdr", "rejected"];

export function render({ query, navigate }) {
  const filters = filterBar(
    [
      { name: "event_type", label: "Kind", type: "select", value: query.event_type || "", options: [{ value: "", label: "Any" }, ...KINDS.map((k) => ({ value: k, label: k }))] },
      { name: "session_token", label: "Session token (exact)", type: "search", value: query.session_token },
    ],
    (v) => navigate("/audit", v),
  );
  const list = api.get("/api/webhook-audit", { event_type: query.event_type, session_token: query.session_token, page: query.page || 1, per_page: 50 });
  list.catch((err) => filters.setErrors(err.fieldErrors || [], err.message));
  const results = later(list, (answer) =>
    h(
      "div",
      {},
      table(
        [
          { label: "Received", render: (a) => fmtTime(a.received_at) },
          { label: "Kind", render: (a) => badge(a.event_type, a.event_type === "rejected" ? "bad" : "info") },
          { label: "Domain", render: (a) => a.domain || "—" },
          { label: "Call", render: (a) => (a.session_token ? link(a.session_token.slice(0, 12), `#/calls/${encodeURIComponent(a.session_token)}`, { "aria-label": `Timeline of call ${a.session_token}` }) : "—") },
          { label: "Outcome", render: (a) => a.outcome || "—" },
          { label: "Latency", render: (a) => (a.latency_us === null ? "—" : `${(a.latency_us / 1000).toFixed(2)} ms`), className: "num" },
          { label: "Engine", render: (a) => a.engine_id || "—" },
          { label: "Body", render: (a) => (a.body ? h("details", {}, h("summary", {}, "show"), h("pre", { class: "json" }, JSON.stringify(a.body, null, 2))) : "—") },
        ],
        answer.data,
        { caption: "Webhook audit", empty: "No webhooks recorded yet." },
      ),
      pager(answer.meta, (page) => navigate("/audit", { ...query, page })),
    ),
  );
  return h("div", {}, pageHeader("Webhook audit"), section(null, filters.el, results));
}
