// CDRs as Cloudonix sent them, with every filter of GET /api/cdr, and the export buttons.
import { api } from "../api.js";
import { exportControls } from "../exports.js";
import { filterBar, fmtDuration, fmtTime, h, later, link, pageHeader, pager, section, statusBadge, table } from "../ui.js";

const DISPOSITIONS = ["ANSWER", "BUSY", "CANCEL", "FAILED", "CONGESTION", "NOANSWER"];
const FILTERS = ["from", "to", "token", "disposition", "start_date", "end_date"];

export function render({ query, navigate }) {
  const filters = filterBar(
    [
      { name: "from", label: "From", type: "search", value: query.from },
      { name: "to", label: "To", type: "search", value: query.to },
      { name: "token", label: "Session token", type: "search", value: query.token },
      { name: "disposition", label: "Disposition", type: "select", value: query.disposition || "", options: [{ value: "", label: "Any" }, ...DISPOSITIONS.map((d) => ({ value: d, label: d }))] },
      { name: "start_date", label: "From day", type: "date", value: query.start_date },
      { name: "end_date", label: "To day", type: "date", value: query.end_date },
    ],
    (v) => navigate("/cdrs", v),
  );
  const filterValues = Object.fromEntries(FILTERS.map((k) => [k, query[k]]));
  const list = api.get("/api/cdr", { ...filterValues, page: query.page || 1, per_page: 50 });
  list.catch((err) => filters.setErrors(err.fieldErrors || [], err.message));
  const detail = h("div", {});
  const results = later(list, (answer) =>
    h(
      "div",
      {},
      table(
        [
          { label: "Started", render: (c) => fmtTime(c.start_time || c.created_at) },
          { label: "From", render: (c) => c.from_number || "—" },
          { label: "To", render: (c) => c.to_number || "—" },
          { label: "Disposition", render: (c) => statusBadge(c.disposition) },
          { label: "Duration", render: (c) => fmtDuration(c.duration_seconds), className: "num" },
          { label: "Billed", render: (c) => fmtDuration(c.billsec), className: "num" },
          { label: "Domain", render: (c) => c.domain || "—" },
          {
            label: "Details",
            render: (c) =>
              h(
                "div",
                { class: "row-actions" },
                h("button", {
                  type: "button",
                  class: "btn small",
                  "aria-label": `Show CDR ${c.id}`,
                  onclick: async () => {
                    const full = await api.get(`/api/cdr/${c.id}`);
                    detail.replaceChildren(section(`CDR ${c.id}`, h("pre", { class: "json" }, JSON.stringify(full.payload ?? full, null, 2))));
                    detail.scrollIntoView({ behavior: "smooth" });
                  },
                }, "Show"),
                link("Call", `#/calls/${encodeURIComponent(c.session_token)}`, { class: "btn small", "aria-label": `Timeline of call ${c.session_token}` }),
              ),
          },
        ],
        answer.data,
        { caption: "CDRs", empty: "No CDRs match these filters." },
      ),
      pager(answer.meta, (page) => navigate("/cdrs", { ...query, page })),
    ),
  );
  return h("div", {}, pageHeader("CDRs"), section(null, filters.el), section(null, exportControls("cdr", () => filterValues), results), detail);
}
