// Tenant settings: name, time zone, what callers hear when no agent is free, fallback CXML, retention.
import { api } from "../api.js";
import { canWrite, form, h, pageHeader, section, toast } from "../ui.js";

const NO_AGENT = [
  { value: "say_and_hangup", label: "Say a message and hang up" },
  { value: "reject_busy", label: "Reject as busy" },
  { value: "reject_congestion", label: "Reject as congestion" },
];

export async function render({ navigate }) {
  const tenant = await api.get("/api/tenant");
  const s = tenant.settings;
  const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  const zoneList = h("datalist", { id: "zones" }, ["UTC", ...zones].map((z) => h("option", { value: z })));
  const f = form({
    readOnly: !canWrite(),
    layout: "grid",
    submitLabel: "Save settings",
    fields: [
      { name: "name", label: "Tenant name", required: true, value: tenant.name },
      { name: "settings.timezone", label: "Time zone", required: true, value: s.timezone, help: "Days in filters and “today” figures follow it." },
      { name: "settings.no_agent_action", label: "When no agent is free", type: "select", value: s.no_agent_action, options: NO_AGENT },
      { name: "settings.no_agent_message", label: "Message when no agent is free", type: "textarea", rows: 2, value: s.no_agent_message, empty: "", wide: true },
      { name: "settings.fallback_cxml", label: "Fallback CXML (answered on an unexpected error)", type: "textarea", rows: 4, value: s.fallback_cxml ?? "", empty: null, wide: true, help: "Empty: the built-in apology and hang-up." },
      { type: "heading", label: "Retention (days, 30 to 3650)" },
      { name: "settings.retention_days.call_records", label: "Call records", type: "number", min: 30, max: 3650, value: s.retention_days?.call_records },
      { name: "settings.retention_days.cdrs", label: "CDRs", type: "number", min: 30, max: 3650, value: s.retention_days?.cdrs },
      { name: "settings.retention_days.webhook_audit", label: "Webhook audit", type: "number", min: 30, max: 3650, value: s.retention_days?.webhook_audit },
    ],
    async onSubmit(values) {
      await api.put("/api/tenant", values);
      toast("Settings saved.");
      navigate("/settings");
    },
  });
  f.input("settings.timezone")?.setAttribute("list", "zones");
  return h("div", {}, pageHeader("Tenant settings"), section(null, zoneList, f.el));
}
