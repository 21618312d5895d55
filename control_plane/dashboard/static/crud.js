// A list of one kind of object with an editor above it: used by the pages whose objects are edited
// as a flat form (trunks, outbound rules, users). Viewers get the list without edit controls.
import { api } from "./api.js";
import { button, canWrite, confirmDialog, errorBox, form, h, pageHeader, pager, section, table, toast } from "./ui.js";

// cfg: {title, newLabel, path, columns, fields(row), label(row), method: "put"|"patch", list(query),
//       caption, empty, intro}
export async function crudPage(cfg, { query, navigate, path }) {
  const answer = await (cfg.list ? cfg.list(query) : api.get(cfg.path, { page: query.page || 1, per_page: 50 }));
  const rows = answer.data;
  const editor = h("div", {});
  const notice = h("div", { "aria-live": "polite" });
  const reload = () => navigate(path, query);
  const open = (row) => {
    const f = form({
      submitLabel: row ? "Save" : cfg.newLabel,
      layout: "grid",
      onCancel: () => editor.replaceChildren(),
      fields: cfg.fields(row),
      async onSubmit(values) {
        if (row) await api[cfg.method || "put"](`${cfg.path}/${row.id}`, values);
        else await api.post(cfg.path, values);
        toast(row ? "Saved." : "Created.");
        reload();
      },
    });
    editor.replaceChildren(section(row ? `Edit ${cfg.label(row)}` : cfg.newLabel, f.el));
    f.el.querySelector("input, select, textarea")?.focus();
  };
  const actions = {
    label: "Actions",
    className: "actions-cell",
    render: (row) =>
      canWrite() && (!cfg.editable || cfg.editable(row))
        ? h(
            "div",
            { class: "row-actions" },
            button("Edit", () => open(row), { write: true, kind: "small", "aria-label": `Edit ${cfg.label(row)}` }),
            button("Delete", async () => {
              if (!(await confirmDialog(`Delete ${cfg.label(row)}?`))) return;
              try {
                await api.del(`${cfg.path}/${row.id}`);
                reload();
              } catch (err) {
                notice.replaceChildren(errorBox(err));
              }
            }, { write: true, kind: "small danger", "aria-label": `Delete ${cfg.label(row)}` }),
          )
        : "—",
  };
  return h(
    "div",
    {},
    pageHeader(cfg.title, button(cfg.newLabel, () => open(null), { write: true, kind: "primary" })),
    editor,
    section(
      null,
      cfg.intro ? h("p", { class: "help" }, cfg.intro) : null,
      cfg.filters || null,
      notice,
      table(canWrite() ? [...cfg.columns, actions] : cfg.columns, rows, { caption: cfg.caption || cfg.title, empty: cfg.empty }),
      pager(answer.meta, (page) => navigate(path, { ...query, page })),
    ),
  );
}
