// Create or edit a voice agent: the selected provider's fields (what service_value must be, which
// credentials it needs) come from the catalogue at GET /api/providers and are checked before sending.
import { api, cached } from "../api.js";
import { button, canWrite, confirmDialog, errorBox, form, h, pageHeader, section, toast } from "../ui.js";

export async function render({ params, navigate }) {
  const providers = (await cached("/api/providers")).data;
  const byKey = Object.fromEntries(providers.map((p) => [p.key, p]));
  const editing = params.id !== undefined;
  const agent = editing ? await api.get(`/api/voice-agents/${params.id}`) : null;
  const readOnly = !canWrite();
  const first = agent?.provider || "vapi";
  const f = form({
    readOnly,
    submitLabel: editing ? "Save changes" : "Create voice agent",
    onCancel: () => navigate("/agents"),
    fields: [
      { name: "name", label: "Name", required: true, value: agent?.name },
      {
        name: "provider",
        label: "Provider",
        type: "select",
        required: true,
        value: first,
        options: providers.map((p) => ({ value: p.key, label: `${p.name} (${p.key})` })),
      },
      { name: "service_value", label: "Service value", required: true, value: agent?.service_value, help: byKey[first]?.service_value, wide: true },
      {
        name: "username",
        label: "Username",
        autocomplete: "off",
        empty: editing ? "" : "omit",
        help: editing && agent.has_credentials ? "Leave empty to keep the stored value." : null,
        requiredNow: () => !editing && byKey[f.input("provider").value]?.requires_username,
      },
      {
        name: "password",
        label: "Password",
        type: "password",
        autocomplete: "new-password",
        empty: editing ? "" : "omit",
        help: editing && agent.has_credentials ? "Leave empty to keep the stored value." : null,
        requiredNow: () => !editing && byKey[f.input("provider").value]?.requires_password,
      },
      { name: "enabled", label: "Enabled (the engine may route calls to it)", type: "checkbox", value: agent ? agent.enabled : true },
      {
        name: "metadata",
        label: "Metadata (JSON object)",
        type: "textarea",
        rows: 3,
        value: agent && Object.keys(agent.metadata || {}).length ? JSON.stringify(agent.metadata, null, 2) : "",
        empty: editing ? {} : "omit",
        wide: true,
        validate: (text) => {
          try {
            const value = JSON.parse(text);
            return value && typeof value === "object" && !Array.isArray(value) ? null : "Must be a JSON object.";
          } catch {
            return "Not valid JSON.";
          }
        },
        parse: (text) => JSON.parse(text),
      },
    ],
    async onSubmit(values) {
      const saved = editing ? await api.patch(`/api/voice-agents/${agent.id}`, values) : await api.post("/api/voice-agents", values);
      toast(editing ? "Voice agent saved." : `Voice agent “${saved.name}” created.`);
      navigate("/agents");
    },
  });

  function showProvider() {
    const p = byKey[f.input("provider").value];
    if (!p) return;
    f.setHelp("service_value", `${p.name}: ${p.service_value}.`);
    const hasStored = editing && agent.has_credentials;
    f.show("username", p.requires_username || hasStored);
    f.show("password", p.requires_password || hasStored);
    f.setRequired("username", Boolean(p.requires_username) && !hasStored);
    f.setRequired("password", Boolean(p.requires_password) && !hasStored);
  }
  f.input("provider").addEventListener("change", showProvider);
  showProvider();

  const remove =
    editing &&
    button(
      "Delete",
      async () => {
        if (!(await confirmDialog(`Delete the voice agent “${agent.name}”? It leaves its groups.`))) return;
        try {
          await api.del(`/api/voice-agents/${agent.id}`);
          toast("Voice agent deleted.");
          navigate("/agents");
        } catch (err) {
          f.el.prepend(errorBox(err));
        }
      },
      { write: true, kind: "danger" },
    );
  return h("div", {}, pageHeader(editing ? `Voice agent: ${agent.name}` : "New voice agent", remove), section(null, f.el));
}
