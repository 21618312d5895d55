// Small DOM helpers shared by the pages: elements, forms whose API errors land next to their field,
// tables, paging, notices and a confirm dialog. No framework: pages build DOM and replace it.
import { ApiError } from "./api.js";
import { session } from "./session.js";

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export const canWrite = () => session.isAdmin();

let uid = 0;
export const nextId = (prefix = "f") => `${prefix}-${++uid}`;

// ---- formatting ---------------------------------------------------------------------------------

export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || seconds === "") return "—";
  const s = Math.round(Number(seconds));
  const m = Math.floor(s / 60);
  return m ? `${m}m ${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}

// The API's rates are fractions (0 to 1, four decimals).
export const fmtPercent = (x) => (x === null || x === undefined ? "—" : `${(Number(x) * 100).toFixed(1)}%`);

export const yesNo = (b) => (b ? "yes" : "no");

export function badge(text, kind = "") {
  return h("span", { class: `badge ${kind}`.trim() }, text);
}

export function statusBadge(status) {
  const kinds = {
    completed: "ok",
    connected: "ok",
    ANSWER: "ok",
    busy: "warn",
    no_answer: "warn",
    BUSY: "warn",
    NOANSWER: "warn",
    failed: "bad",
    canceled: "muted",
    FAILED: "bad",
    CONGESTION: "bad",
    CANCEL: "muted",
  };
  return badge(status || "—", kinds[status] || "info");
}

// ---- page chrome --------------------------------------------------------------------------------

export function pageHeader(title, ...actions) {
  document.title = `${title} · Voice agent load balancer`;
  return h("div", { class: "page-header" }, h("h1", { id: "page-title", tabindex: "-1" }, title), h("div", { class: "actions" }, actions));
}

export function section(title, ...children) {
  return h("section", { class: "card" }, title ? h("h2", {}, title) : null, children);
}

export function button(label, onclick, { kind = "", write = false, type = "button", ...attrs } = {}) {
  if (write && !canWrite()) return null;
  return h("button", { type, class: `btn ${kind}`.trim(), onclick, ...(write ? { "data-write": "" } : {}), ...attrs }, label);
}

export function link(label, href, attrs = {}) {
  return h("a", { href, ...attrs }, label);
}

export function errorBox(err) {
  const message = err instanceof ApiError ? err.message : String(err?.message || err);
  return h("div", { class: "alert error", role: "alert" }, message);
}

export function loading() {
  return h("p", { class: "muted", "aria-live": "polite" }, "Loading…");
}

// A region that shows its content once `promise` resolves, or the error.
export function later(promise, render) {
  const box = h("div", {}, loading());
  promise.then(
    (value) => box.replaceChildren(render(value)),
    (err) => box.replaceChildren(errorBox(err)),
  );
  return box;
}

export function toast(message, kind = "ok") {
  const region = document.getElementById("toasts");
  if (!region) return;
  const note = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  region.append(note);
  setTimeout(() => note.remove(), 5000);
}

export function confirmDialog(message, confirmLabel = "Delete") {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { class: "dialog", "aria-labelledby": "confirm-text" },
      h("p", { id: "confirm-text" }, message),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "btn", onclick: () => dialog.close("no") }, "Cancel"),
        h("button", { type: "button", class: "btn danger", onclick: () => dialog.close("yes") }, confirmLabel),
      ),
    );
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(dialog.returnValue === "yes");
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

// Shows a secret once, with a copy button; resolves when dismissed.
export function secretDialog(title, secret, note) {
  return new Promise((resolve) => {
    const input = h("input", { class: "secret", readonly: true, value: secret, "aria-label": title, id: "secret-value" });
    const dialog = h(
      "dialog",
      { class: "dialog", "aria-labelledby": "secret-title" },
      h("h2", { id: "secret-title" }, title),
      h("p", {}, note),
      input,
      h(
        "div",
        { class: "actions" },
        h("button", {
          type: "button",
          class: "btn",
          onclick: async () => {
            input.select();
            try {
              await navigator.clipboard.writeText(secret);
              toast("Copied.");
            } catch {
              document.execCommand?.("copy");
            }
          },
        }, "Copy"),
        h("button", { type: "button", class: "btn primary", onclick: () => dialog.close() }, "I have stored it"),
      ),
    );
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve();
    });
    document.body.append(dialog);
    dialog.showModal();
    input.select();
  });
}

// ---- tables and paging --------------------------------------------------------------------------

// A column with `write: true` (row actions) is left out for viewers.
export function table(allColumns, rows, { caption, empty = "Nothing here yet.", rowAttrs } = {}) {
  const columns = allColumns.filter((c) => !c.write || canWrite());
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      caption ? h("caption", { class: "sr-only" }, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.className }, c.label)))),
      h(
        "tbody",
        {},
        rows.map((row) =>
          h(
            "tr",
            rowAttrs ? rowAttrs(row) : {},
            columns.map((c) => h("td", { class: c.className, "data-label": c.label }, c.render ? c.render(row) : row[c.key] ?? "—")),
          ),
        ),
      ),
    ),
  );
}

export function pager(meta, onPage) {
  if (!meta) return null;
  const info = meta.total ? `${meta.from}–${meta.to} of ${meta.total}` : "0 results";
  return h(
    "nav",
    { class: "pager", "aria-label": "Pages" },
    h("button", { type: "button", class: "btn", disabled: meta.current_page <= 1, onclick: () => onPage(meta.current_page - 1) }, "‹ Previous"),
    h("span", { "aria-live": "polite" }, `Page ${meta.current_page} of ${meta.last_page} · ${info}`),
    h("button", { type: "button", class: "btn", disabled: meta.current_page >= meta.last_page, onclick: () => onPage(meta.current_page + 1) }, "Next ›"),
  );
}

// ---- forms --------------------------------------------------------------------------------------
// fields: [{name, label, type, options, required, help, value, min, max, step, placeholder, empty,
// readOnly, autocomplete}] — `name` is the API's field path ("settings.window_hours"); `empty` says
// what an empty input sends: "omit" (default), null, or "" .

function control(f, id, errId, helpId, disabled) {
  const common = {
    id,
    name: f.name,
    "aria-describedby": [helpId, errId].filter(Boolean).join(" "),
    disabled: disabled || f.readOnly,
    required: f.required,
    autocomplete: f.autocomplete,
    placeholder: f.placeholder,
  };
  if (f.type === "multiselect") {
    const chosen = new Set((f.value || []).map(String));
    return h("select", { ...common, multiple: true, size: Math.min(6, Math.max(3, (f.options || []).length)) }, (f.options || []).map((o) => h("option", { value: o.value, selected: chosen.has(String(o.value)) }, o.label ?? o.value)));
  }
  if (f.type === "select") {
    const select = h("select", common, (f.options || []).map((o) => h("option", { value: o.value }, o.label ?? o.value)));
    if (f.value !== undefined && f.value !== null) select.value = String(f.value);
    return select;
  }
  if (f.type === "textarea") {
    return h("textarea", { ...common, rows: f.rows || 4 }, f.value ?? "");
  }
  if (f.type === "checkbox") {
    const box = h("input", { ...common, type: "checkbox", required: false });
    box.checked = Boolean(f.value);
    return box;
  }
  const input = h("input", { ...common, type: f.type || "text", min: f.min, max: f.max, step: f.step, inputmode: f.inputmode });
  if (f.value !== undefined && f.value !== null) input.value = String(f.value);
  return input;
}

// `fieldError(field, message)`: a form with its own editors (lists of rows) shows the API errors those
// own and answers the element to focus (or true); other errors land on the form's fields.
export function form({ fields, submitLabel = "Save", onSubmit, onCancel, readOnly = false, className = "", extra, layout = "", fieldError }) {
  const slots = new Map();
  const formError = h("div", { class: "alert error", role: "alert", hidden: true });
  const el = h("form", { class: `form ${layout} ${className}`.trim(), novalidate: true });
  for (const f of fields) {
    if (f.type === "heading") {
      el.append(h("h3", { class: "form-heading" }, f.label));
      continue;
    }
    const id = nextId("field");
    const errId = `${id}-error`;
    const helpId = f.help ? `${id}-help` : null;
    const input = control(f, id, errId, helpId, readOnly);
    const error = h("p", { class: "field-error", id: errId, hidden: true });
    const label = h("label", { for: id, class: f.required && !readOnly ? "required" : null }, f.label);
    const wrap = h(
      "div",
      { class: `field ${f.type === "checkbox" ? "check" : ""} ${f.wide ? "wide" : ""}`.trim(), "data-field": f.name, hidden: f.hidden },
      f.type === "checkbox" ? [input, label] : [label, input],
      f.help ? h("p", { class: "help", id: helpId }, f.help) : null,
      error,
    );
    slots.set(f.name, { f, input, error, wrap });
    el.append(wrap);
  }
  if (extra) el.append(extra);
  el.append(formError);
  const submit = h("button", { type: "submit", class: "btn primary", "data-write": "" }, submitLabel);
  if (!readOnly) {
    el.append(h("div", { class: "form-actions" }, submit, onCancel ? h("button", { type: "button", class: "btn", onclick: onCancel }, "Cancel") : null));
  }

  function clearErrors() {
    formError.hidden = true;
    formError.replaceChildren();
    for (const { input, error, wrap } of slots.values()) {
      error.hidden = true;
      error.textContent = "";
      input.removeAttribute("aria-invalid");
      wrap.classList.remove("invalid");
    }
  }

  function slotFor(field) {
    if (slots.has(field)) return slots.get(field);
    // "settings.window_hours" may be shown by a field named "window_hours", and the other way round.
    let best = null;
    for (const [name, slot] of slots) {
      if (slot.wrap.hidden) continue;
      if (field.endsWith(`.${name}`) || name.endsWith(`.${field}`) || field.startsWith(`${name}.`) || field.startsWith(`${name}[`)) {
        if (!best || name.length > best[0].length) best = [name, slot];
      }
    }
    return best ? best[1] : null;
  }

  function setErrors(errors, detail) {
    const loose = [];
    let first = null;
    for (const { field, message } of errors) {
      const own = field && fieldError ? fieldError(field, message) : null;
      if (own) {
        first = first || (own === true ? null : own);
        continue;
      }
      const slot = field ? slotFor(field) : null;
      if (!slot) {
        loose.push(field ? `${field}: ${message}` : message);
        continue;
      }
      slot.error.hidden = false;
      slot.error.textContent = slot.error.textContent ? `${slot.error.textContent} ${message}` : message;
      slot.input.setAttribute("aria-invalid", "true");
      slot.wrap.classList.add("invalid");
      first = first || slot.input;
    }
    if (loose.length || (!errors.length && detail)) {
      formError.hidden = false;
      formError.replaceChildren(...(loose.length ? loose : [detail]).map((m) => h("div", {}, m)));
    }
    (first || formError).focus?.();
  }

  function values() {
    const out = {};
    for (const [name, { f, input, wrap }] of slots) {
      if (wrap.hidden || f.readOnly || f.noSubmit) continue;
      let value;
      if (f.type === "checkbox") value = input.checked;
      else if (f.type === "multiselect") value = Array.from(input.selectedOptions).map((o) => (f.parse ? f.parse(o.value) : o.value));
      else if (f.type === "number") value = input.value.trim() === "" ? "" : Number(input.value);
      else if (f.type === "lines") value = input.value;
      else value = input.value.trim();
      if (f.parse && value !== "" && !Array.isArray(value)) value = f.parse(value);
      if (value === "") {
        const empty = f.empty === undefined ? "omit" : f.empty;
        if (empty === "omit") continue;
        value = empty;
      }
      setPath(out, name, value);
    }
    return out;
  }

  function validate() {
    const errors = [];
    for (const [name, { f, input, wrap }] of slots) {
      if (wrap.hidden || readOnly) continue;
      const empty = f.type === "multiselect" ? input.selectedOptions.length === 0 : f.type !== "checkbox" && input.value.trim() === "";
      if ((f.required || f.requiredNow?.()) && empty) errors.push({ field: name, message: `${f.label} is required.` });
      else if (!empty && f.type === "number" && Number.isNaN(Number(input.value))) errors.push({ field: name, message: "Enter a number." });
      else if (!empty && f.type === "number" && f.min !== undefined && Number(input.value) < f.min) errors.push({ field: name, message: `Must be ${f.min} or more.` });
      else if (!empty && f.type === "number" && f.max !== undefined && Number(input.value) > f.max) errors.push({ field: name, message: `Must be ${f.max} or less.` });
      else if (!empty && f.validate) {
        const message = f.validate(input.value.trim());
        if (message) errors.push({ field: name, message });
      }
    }
    return errors;
  }

  el.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (readOnly) return;
    clearErrors();
    const problems = validate();
    if (problems.length) {
      setErrors(problems);
      return;
    }
    submit.disabled = true;
    el.setAttribute("aria-busy", "true");
    try {
      await onSubmit(values());
    } catch (err) {
      if (err instanceof ApiError) setErrors(err.fieldErrors, err.message);
      else setErrors([], String(err?.message || err));
    } finally {
      submit.disabled = false;
      el.removeAttribute("aria-busy");
    }
  });

  return {
    el,
    values,
    setErrors,
    clearErrors,
    input: (name) => slots.get(name)?.input,
    show(name, visible) {
      const slot = slots.get(name);
      if (slot) slot.wrap.hidden = !visible;
    },
    setHelp(name, text) {
      const slot = slots.get(name);
      const help = slot?.wrap.querySelector(".help");
      if (help) help.textContent = text;
    },
    setRequired(name, required) {
      const slot = slots.get(name);
      if (!slot) return;
      slot.f.required = required;
      slot.input.required = required;
      slot.wrap.querySelector("label").classList.toggle("required", required);
    },
  };
}

function setPath(target, path, value) {
  const parts = path.split(".");
  let node = target;
  for (const part of parts.slice(0, -1)) {
    node[part] = node[part] && typeof node[part] === "object" ? node[part] : {};
    node = node[part];
  }
  node[parts[parts.length - 1]] = value;
}

// A filter bar: inputs that re-run `onChange(values)` on submit; labelled, keyboard friendly.
export function filterBar(fields, onChange, { submitLabel = "Apply filters" } = {}) {
  const f = form({ fields: fields.map((x) => ({ ...x, required: false })), submitLabel, onSubmit: async (v) => onChange(v), layout: "inline filters" });
  // filters are not writes: viewers use them too
  f.el.querySelector("button[type=submit]")?.removeAttribute("data-write");
  const reset = h("button", { type: "button", class: "btn", onclick: () => { f.el.reset(); onChange({}); } }, "Clear");
  f.el.querySelector(".form-actions")?.append(reset);
  f.el.setAttribute("role", "search");
  return f;
}

export const splitList = (text) =>
  String(text || "")
    .split(/[\n,]/)
    .map((s) => s.trim())
    .filter(Boolean);
