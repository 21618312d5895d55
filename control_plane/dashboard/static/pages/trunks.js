// Trunks: the Cloudonix trunks outbound calls leave through.
import { crudPage } from "../crud.js";
import { badge, h } from "../ui.js";

export function render(ctx) {
  return crudPage(
    {
      title: "Trunks",
      newLabel: "New trunk",
      path: "/api/trunks",
      label: (t) => `trunk “${t.name}”`,
      intro: "Outbound rules send calls through these trunks, lowest priority number first.",
      empty: "No trunks yet.",
      columns: [
        { label: "Name", key: "name" },
        { label: "Cloudonix trunk", render: (t) => h("code", {}, t.cloudonix_trunk) },
        { label: "Description", render: (t) => t.description || "—" },
        { label: "Priority", key: "priority", className: "num" },
        { label: "Default", render: (t) => (t.is_default ? badge("default", "info") : "—") },
        { label: "State", render: (t) => (t.enabled ? badge("enabled", "ok") : badge("disabled", "muted")) },
      ],
      fields: (t) => [
        { name: "name", label: "Name", required: true, value: t?.name },
        { name: "cloudonix_trunk", label: "Cloudonix trunk name", required: true, value: t?.cloudonix_trunk },
        { name: "description", label: "Description", type: "textarea", rows: 2, value: t?.description ?? "", empty: t ? null : "omit", wide: true },
        { name: "priority", label: "Priority", type: "number", min: 1, max: 100000, value: t?.priority ?? 100 },
        { name: "is_default", label: "The tenant's default trunk", type: "checkbox", value: t?.is_default ?? false },
        { name: "enabled", label: "Enabled", type: "checkbox", value: t ? t.enabled : true },
      ],
    },
    ctx,
  );
}
