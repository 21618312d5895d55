// Cloudonix domains: the webhook URLs to paste into Cloudonix, the key (shown in full once, on
// create and on rotation), source networks, rate ceiling and aliases.
import { api } from "../api.js";
import { button, canWrite, confirmDialog, errorBox, fmtTime, form, h, pageHeader, pager, secretDialog, section, splitList, toast } from "../ui.js";

const URL_LABELS = {
  voice_application: "Voice application URL",
  dial_status: "Dial status (action) URL",
  session_update: "Session update webhook",
  cdr: "CDR webhook",
};

function copyable(label, value) {
  return h(
    "div",
    { class: "copy-row" },
    h("span", { class: "copy-label" }, label),
    h("code", { class: "copy-value" }, value),
    h("button", {
      type: "button",
      class: "btn small",
      "aria-label": `Copy the ${label.toLowerCase()}`,
      onclick: async () => {
        try {
          await navigator.clipboard.writeText(value);
          toast("Copied.");
        } catch {
          toast("Copy failed: select the text and copy it.", "error");
        }
      },
    }, "Copy"),
  );
}

function domainFields(d) {
  return [
    ...(d ? [] : [{ name: "domain", label: "Cloudonix domain", required: true, placeholder: "acme.cloudonix.net", help: "As Cloudonix names it; it cannot change later (the webhook URLs depend on it)." }]),
    { name: "allowed_networks", label: "Allowed source networks", type: "textarea", rows: 2, value: (d?.allowed_networks || []).join("\n"), empty: [], parse: splitList, help: "CIDRs, one per line or comma separated; empty = any address.", wide: true },
    { name: "max_requests_per_second", label: "Request-rate ceiling (per second)", type: "number", min: 1, max: 100000, step: "any", value: d?.max_requests_per_second ?? "", empty: d ? null : "omit", help: "Empty = no ceiling." },
    { name: "aliases", label: "Aliases (application ids or names)", type: "textarea", rows: 2, value: (d?.aliases || []).join("\n"), empty: [], parse: splitList, wide: true },
  ];
}

export async function render({ query, navigate }) {
  const answer = await api.get("/api/domains", { page: query.page || 1, per_page: 20 });
  const editor = h("div", {});
  const reload = () => navigate("/domains", query);
  const open = (d) => {
    const f = form({
      layout: "grid",
      submitLabel: d ? "Save domain" : "Add domain",
      onCancel: () => editor.replaceChildren(),
      fields: domainFields(d),
      async onSubmit(values) {
        if (d) {
          await api.put(`/api/domains/${d.id}`, values);
          toast("Domain saved.");
        } else {
          const created = await api.post("/api/domains", values);
          await secretDialog("The domain's webhook key", created.webhook_key, "Paste it into the domain's authorization-api-key property in Cloudonix. It is shown only now; rotate it if it is lost.");
        }
        reload();
      },
    });
    editor.replaceChildren(section(d ? `Edit ${d.domain}` : "Add a Cloudonix domain", f.el));
    f.el.querySelector("input, textarea")?.focus();
  };
  const cards = answer.data.map((d) => {
    const notice = h("div", { "aria-live": "polite" });
    return h(
      "article",
      { class: "card domain", "data-domain": d.domain },
      h(
        "div",
        { class: "card-head" },
        h("h2", {}, d.domain),
        h(
          "div",
          { class: "row-actions" },
          button("Edit", () => open(d), { write: true, kind: "small", "aria-label": `Edit ${d.domain}` }),
          button("Rotate key", async () => {
            if (!(await confirmDialog(`Replace the webhook key of ${d.domain}? The old key stops working as soon as the engines load the change.`, "Rotate"))) return;
            try {
              const rotated = await api.post(`/api/domains/${d.id}/rotate-key`);
              await secretDialog("The new webhook key", rotated.webhook_key, "Paste it into Cloudonix now; it is shown only once.");
              reload();
            } catch (err) {
              notice.replaceChildren(errorBox(err));
            }
          }, { write: true, kind: "small", "aria-label": `Rotate the key of ${d.domain}` }),
          button("Delete", async () => {
            if (!(await confirmDialog(`Delete ${d.domain} and the inbound rules limited to it?`))) return;
            try {
              await api.del(`/api/domains/${d.id}`);
              reload();
            } catch (err) {
              notice.replaceChildren(errorBox(err));
            }
          }, { write: true, kind: "small danger", "aria-label": `Delete ${d.domain}` }),
        ),
      ),
      notice,
      h("p", { class: "muted" }, `Webhook key ends in …${d.key_hint} · added ${fmtTime(d.created_at)}`),
      h("div", { class: "copy-list" }, Object.entries(d.webhook_urls).map(([k, v]) => copyable(URL_LABELS[k] || k, v))),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Source networks"), h("dd", {}, d.allowed_networks.length ? d.allowed_networks.join(", ") : "any"),
        h("dt", {}, "Rate ceiling"), h("dd", {}, d.max_requests_per_second ? `${d.max_requests_per_second}/s` : "none"),
        h("dt", {}, "Aliases"), h("dd", {}, d.aliases.length ? d.aliases.join(", ") : "—"),
      ),
    );
  });
  return h(
    "div",
    {},
    pageHeader("Domains", button("Add domain", () => open(null), { write: true, kind: "primary" })),
    editor,
    h("p", { class: "help" }, "Configure each URL in Cloudonix for the domain, with the domain's webhook key as its authorization-api-key."),
    cards.length ? cards : section(null, h("p", { class: "empty" }, canWrite() ? "No domains yet: add the Cloudonix domain your calls arrive on." : "No domains yet.")),
    pager(answer.meta, (page) => navigate("/domains", { ...query, page })),
  );
}
