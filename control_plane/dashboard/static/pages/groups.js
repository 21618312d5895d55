// Agent groups: the list with strategy, state and members; toggle in the row.
import { api } from "../api.js";
import { badge, button, canWrite, errorBox, filterBar, h, later, link, pageHeader, pager, section, table } from "../ui.js";
import { STRATEGIES } from "./group.js";

export function render({ query, navigate }) {
  const filters = filterBar(
    [
      { name: "search", label: "Search", type: "search", value: query.search, placeholder: "group name" },
      { name: "strategy", label: "Strategy", type: "select", value: query.strategy || "", options: [{ value: "", label: "Any" }, ...STRATEGIES] },
      { name: "enabled", label: "State", type: "select", value: query.enabled || "", options: [{ value: "", label: "Any" }, { value: "true", label: "Enabled" }, { value: "false", label: "Disabled" }] },
    ],
    (v) => navigate("/groups", v),
  );
  const strategyLabel = Object.fromEntries(STRATEGIES.map((s) => [s.value, s.label]));
  const notice = h("div", { "aria-live": "polite" });
  const results = later(
    api.get("/api/agent-groups", { search: query.search, strategy: query.strategy, enabled: query.enabled, page: query.page || 1, per_page: 20 }),
    (answer) =>
      h(
        "div",
        {},
        table(
          [
            { label: "Name", render: (g) => link(g.name, `#/groups/${g.id}`) },
            { label: "Strategy", render: (g) => strategyLabel[g.strategy] || g.strategy },
            { label: "Members", render: (g) => (g.members.length ? g.members.map((m) => m.name).join(", ") : "—") },
            { label: "State", render: (g) => (g.enabled ? badge("enabled", "ok") : badge("disabled", "muted")) },
            {
              label: "Actions",
            write: true,
              className: "actions-cell",
              render: (g) =>
                canWrite()
                  ? button(g.enabled ? "Disable" : "Enable", async () => {
                      try {
                        await api.patch(`/api/agent-groups/${g.id}/toggle`);
                        navigate("/groups", { ...query });
                      } catch (err) {
                        notice.replaceChildren(errorBox(err));
                      }
                    }, { write: true, kind: "small", "aria-label": `${g.enabled ? "Disable" : "Enable"} ${g.name}` })
                  : "—",
            },
          ],
          answer.data,
          { caption: "Agent groups", empty: "No agent groups match." },
        ),
        pager(answer.meta, (page) => navigate("/groups", { ...query, page })),
      ),
  );
  return h("div", {}, pageHeader("Agent groups", button("New group", () => navigate("/groups/new"), { write: true, kind: "primary" })), section(null, filters.el, notice, results));
}
