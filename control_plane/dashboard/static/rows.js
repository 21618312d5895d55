// An editable, ordered list of rows (overflow steps, split branches, time ranges): each row is a
// fieldset with its own inputs and error line; rows move up and down and are removed by buttons, so
// the keyboard does everything. Viewers get the rows as text instead (see the pages).
import { h, nextId } from "./ui.js";

// cfg: {label (the list's name, for screen readers), addLabel, rowLabel(i), draw(row, put) -> nodes,
//       blank() -> a new row, rows, min (rows that cannot be removed below), max, onChange()}
// draw() builds the row's inputs; put(key, value) updates the row (and calls onChange).
export function rowsEditor(cfg) {
  let rows = (cfg.rows || []).map((r) => ({ ...r }));
  const list = h("ol", { class: "rows", "aria-label": cfg.label });
  const error = h("p", { class: "field-error", role: "alert", hidden: true });
  const status = h("p", { class: "sr-only", "aria-live": "polite" });
  const errors = new Map(); // row index -> message
  const add = h("button", { type: "button", class: "btn small", onclick: () => {
    rows.push(cfg.blank(rows));
    draw();
    changed();
    list.lastElementChild?.querySelector("select, input, textarea")?.focus();
    status.textContent = `${cfg.rowLabel(rows.length - 1)} added.`;
  } }, cfg.addLabel);

  function changed() {
    cfg.onChange?.(rows);
  }

  function move(i, delta) {
    const j = i + delta;
    if (j < 0 || j >= rows.length) return;
    [rows[i], rows[j]] = [rows[j], rows[i]];
    draw();
    changed();
    list.children[j]?.querySelector(delta < 0 ? ".up" : ".down")?.focus();
    status.textContent = `Moved to position ${j + 1} of ${rows.length}.`;
  }

  function draw() {
    list.replaceChildren(
      ...rows.map((row, i) => {
        const put = (key, value) => {
          row[key] = value;
          changed();
        };
        const message = errors.get(i);
        const errId = nextId("row-error");
        const item = h(
          "li",
          { class: `row-item${message ? " invalid" : ""}`, "data-row": i },
          h(
            "fieldset",
            { "aria-describedby": errId },
            h("legend", {}, cfg.rowLabel(i)),
            h("div", { class: "row-fields" }, cfg.draw(row, put, i, () => draw())),
            h(
              "div",
              { class: "row-actions" },
              cfg.ordered
                ? [
                    h("button", { type: "button", class: "btn small up", disabled: i === 0, "aria-label": `Move ${cfg.rowLabel(i)} up`, onclick: () => move(i, -1) }, "↑"),
                    h("button", { type: "button", class: "btn small down", disabled: i === rows.length - 1, "aria-label": `Move ${cfg.rowLabel(i)} down`, onclick: () => move(i, 1) }, "↓"),
                  ]
                : null,
              h("button", {
                type: "button",
                class: "btn small danger",
                disabled: rows.length <= (cfg.min || 0),
                "aria-label": `Remove ${cfg.rowLabel(i)}`,
                onclick: () => {
                  rows.splice(i, 1);
                  errors.clear();
                  draw();
                  changed();
                  status.textContent = `${cfg.rowLabel(i)} removed.`;
                  (list.children[Math.min(i, rows.length - 1)]?.querySelector("select, input") || add).focus();
                },
              }, "Remove"),
            ),
            h("p", { class: "field-error", id: errId, hidden: !message }, message || ""),
          ),
        );
        return item;
      }),
    );
    add.disabled = Boolean(cfg.max && rows.length >= cfg.max);
  }

  draw();
  return {
    el: h("div", { class: "rows-editor" }, list, status, error, h("div", { class: "form-actions" }, add)),
    values: () => rows.map((r) => ({ ...r })),
    set(newRows) {
      rows = newRows.map((r) => ({ ...r }));
      errors.clear();
      draw();
    },
    clearErrors() {
      errors.clear();
      error.hidden = true;
      error.textContent = "";
      draw();
    },
    // index null: the list as a whole; key: the row's control named by the error (data-key), marked
    // invalid and focused. Answers the element to focus.
    setError(index, message, key) {
      if (index === null || index === undefined || !rows[index]) {
        error.hidden = false;
        error.textContent = error.textContent ? `${error.textContent} ${message}` : message;
        return error;
      }
      errors.set(index, errors.has(index) ? `${errors.get(index)} ${message}` : message);
      draw();
      const row = list.children[index];
      const input = (key && row?.querySelector(`[data-key="${key}"]`)) || row?.querySelector("select, input, textarea");
      input?.setAttribute("aria-invalid", "true");
      input?.setAttribute("aria-describedby", row.querySelector("fieldset > .field-error").id);
      return input;
    },
    error,
  };
}

// A labelled control inside a row (mini-field layout as the members list).
export function rowField(label, control) {
  const id = nextId("rowf");
  control.id = id;
  return h("div", { class: "mini-field" }, h("label", { for: id }, label), control);
}

export function selectOf(options, value, attrs = {}) {
  const select = h("select", attrs, options.map((o) => h("option", { value: o.value }, o.label ?? o.value)));
  if (value !== undefined && value !== null) select.value = String(value);
  return select;
}

// "[i]" in an API error path ("settings.overflow[2].number") → 2, or null.
export function indexIn(field, prefix) {
  if (field === prefix) return { index: null, rest: "" };
  const m = new RegExp(`^${prefix.replace(/[.[\]]/g, "\\$&")}\\[(\\d+)\\](?:\\.(.+))?$`).exec(field);
  return m ? { index: Number(m[1]), rest: m[2] || "" } : null;
}
