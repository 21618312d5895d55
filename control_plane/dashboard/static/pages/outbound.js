// Outbound routing rules: which trunks a subscriber's call to a destination leaves through.
import { all } from "../api.js";
import { crudPage } from "../crud.js";
import { badge, h } from "../ui.js";

export async function render(ctx) {
  const trunks = await all("/api/trunks");
  const trunkName = (id) => trunks.find((t) => t.id === id)?.name || `#${id}`;
  return crudPage(
    {
      title: "Outbound rules",
      newLabel: "New outbound rule",
      path: "/api/outbound-routing-rules",
      label: (r) => `outbound rule “${r.name}”`,
      intro: "Tried in order (priority, then id); the first whose patterns match picks the trunks.",
      empty: "No outbound rules yet.",
      columns: [
        { label: "Name", key: "name" },
        { label: "Destination", render: (r) => h("code", {}, r.destination_pattern) },
        { label: "Caller", render: (r) => (r.caller_id ? h("code", {}, r.caller_id) : "any") },
        { label: "Trunks", render: (r) => (r.trunk_ids.length ? r.trunk_ids.map(trunkName).join(", ") : "default") },
        { label: "Number rewrite", render: (r) => [r.strip_prefix ? `strip ${r.strip_prefix}` : "", r.add_prefix ? `add ${r.add_prefix}` : "", r.caller_id_override ? `caller ID ${r.caller_id_override}` : ""].filter(Boolean).join(", ") || "—" },
        { label: "Priority", key: "priority", className: "num" },
        { label: "State", render: (r) => (r.enabled ? badge("enabled", "ok") : badge("disabled", "muted")) },
      ],
      fields: (r) => [
        { name: "name", label: "Name", required: true, value: r?.name },
        { name: "destination_pattern", label: "Destination pattern", required: true, value: r?.destination_pattern, help: "E.g. +44*, or * for everything." },
        { name: "caller_id", label: "Caller pattern", value: r?.caller_id ?? "", empty: r ? null : "omit" },
        {
          name: "trunk_ids",
          label: "Trunks (in order of use)",
          type: "multiselect",
          value: r?.trunk_ids || [],
          options: trunks.map((t) => ({ value: t.id, label: `${t.name} (${t.cloudonix_trunk})` })),
          parse: Number,
          help: trunks.length ? "None selected: the default trunk." : "No trunks yet: create one on the Trunks page.",
        },
        { name: "caller_id_override", label: "Caller ID override", value: r?.caller_id_override ?? "", empty: r ? null : "omit" },
        { name: "strip_prefix", label: "Strip prefix", value: r?.strip_prefix ?? "", empty: r ? null : "omit" },
        { name: "add_prefix", label: "Add prefix", value: r?.add_prefix ?? "", empty: r ? null : "omit" },
        { name: "priority", label: "Priority", type: "number", min: 1, max: 100000, value: r?.priority ?? 100 },
        { name: "enabled", label: "Enabled", type: "checkbox", value: r ? r.enabled : true },
      ],
    },
    ctx,
  );
}
