// Voice agents: search, filters and paging; toggle and validate in the row.
import { api, cached } from "../api.js";
import { badge, button, canWrite, errorBox, filterBar, h, later, link, pageHeader, pager, section, table, toast } from "../ui.js";

export async function render({ query, navigate }) {
  const providers = (await cached("/api/providers")).data;
  const providerName = Object.fromEntries(providers.map((p) => [p.key, p.name]));
  const filters = filterBar(
    [
      { name: "search", label: "Search", type: "search", value: query.search, placeholder: "name or service value" },
      {
        name: "provider",
        label: "Provider",
        type: "select",
        value: query.provider || "",
        options: [{ value: "", label: "Any" }, ...providers.map((p) => ({ value: p.key, label: p.name }))],
      },
      {
        name: "enabled",
        label: "State",
        type: "select",
        value: query.enabled || "",
        options: [{ value: "", label: "Any" }, { value: "true", label: "Enabled" }, { value: "false", label: "Disabled" }],
      },
    ],
    (v) => navigate("/agents", v),
  );
  const params = { search: query.search, provider: query.provider, enabled: query.enabled, page: query.page || 1, per_page: 20 };
  const results = later(api.get("/api/voice-agents", params), (answer) => {
    const validation = h("div", { "aria-live": "polite" });
    return h(
      "div",
      {},
      validation,
      table(
        [
          { label: "Name", render: (a) => link(a.name, `#/agents/${a.id}`) },
          { label: "Provider", render: (a) => providerName[a.provider] || a.provider },
          { label: "Service value", render: (a) => h("code", {}, a.service_value) },
          { label: "State", render: (a) => (a.enabled ? badge("enabled", "ok") : badge("disabled", "muted")) },
          { label: "Credentials", render: (a) => (a.has_credentials ? "stored" : "—") },
          {
            label: "Actions",
            write: true,
            className: "actions-cell",
            render: (a) =>
              canWrite()
                ? h(
                    "div",
                    { class: "row-actions" },
                    button(a.enabled ? "Disable" : "Enable", async () => {
                      try {
                        await api.patch(`/api/voice-agents/${a.id}/toggle`);
                        navigate("/agents", { ...query });
                      } catch (err) {
                        validation.replaceChildren(errorBox(err));
                      }
                    }, { write: true, kind: "small", "aria-label": `${a.enabled ? "Disable" : "Enable"} ${a.name}` }),
                    button("Validate", async () => {
                      try {
                        const result = await api.post(`/api/voice-agents/${a.id}/validate`);
                        if (result.valid) toast(`${a.name}: the configuration is valid.`);
                        else validation.replaceChildren(h("div", { class: "alert error", role: "alert" }, `${a.name}: `, result.problems.map((p) => `${p.field}: ${p.message}`).join("; ")));
                      } catch (err) {
                        validation.replaceChildren(errorBox(err));
                      }
                    }, { write: true, kind: "small", "aria-label": `Validate ${a.name}` }),
                  )
                : "—",
          },
        ],
        answer.data,
        { caption: "Voice agents", empty: "No voice agents match." },
      ),
      pager(answer.meta, (page) => navigate("/agents", { ...query, page })),
    );
  });
  return h(
    "div",
    {},
    pageHeader("Voice agents", button("New voice agent", () => navigate("/agents/new"), { write: true, kind: "primary" })),
    section(null, filters.el, results),
  );
}
