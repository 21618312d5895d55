// Inbound routing rules, in the order the engine tries them (priority, then id); create and edit;
// and the dry run: "which rule would take this call" (POST /api/inbound-routing-rules/test).
import { all, api } from "../api.js";
import { indexIn, rowField, rowsEditor, selectOf } from "../rows.js";
import { badge, button, canWrite, confirmDialog, errorBox, fmtDuration, fmtPercent, form, h, later, nextId, pageHeader, section, table, toast } from "../ui.js";

// Summaries of a rule's schedule and traffic split (the list, and what viewers see).
const DAY_LABEL = { mon: "Mon", tue: "Tue", wed: "Wed", thu: "Thu", fri: "Fri", sat: "Sat", sun: "Sun" };
export function scheduleText(schedule) {
  if (!schedule) return "always";
  const days = schedule.days.length ? schedule.days.map((d) => DAY_LABEL[d] || d).join(" ") : "every day";
  const ranges = schedule.ranges.length ? schedule.ranges.map(([a, b]) => `${a}–${b}`).join(", ") : "all day";
  const holidays = schedule.holidays.length ? `; closed ${schedule.holidays.length} holiday(s)` : "";
  return `${days}, ${ranges} (${schedule.timezone})${holidays}`;
}

function splitText(rule, refs) {
  return rule.targets
    .map((t) => `${(t.target_type === "agent" ? refs.agents : refs.groups).find((x) => x.id === t.target_id)?.name || `#${t.target_id}`} ${t.percent}%`)
    .join(" · ");
}

const DAYS = Object.keys(DAY_LABEL);
const zones = () => {
  try {
    return Intl.supportedValuesOf("timeZone");
  } catch {
    return ["UTC"];
  }
};

// The schedule editor: off (null = always open) or {timezone, days, ranges, holidays}.
function scheduleEditor(schedule) {
  const on = h("input", { type: "checkbox", id: nextId("sched"), checked: Boolean(schedule) });
  const body = h("div", { class: "schedule-body", hidden: !schedule });
  on.addEventListener("change", () => {
    body.hidden = !on.checked;
  });
  const s = schedule || { timezone: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC", days: ["mon", "tue", "wed", "thu", "fri"], ranges: [["09:00", "17:30"]], holidays: [] };
  const listId = nextId("zones");
  const errs = {};
  const errLine = (key) => (errs[key] = h("p", { class: "field-error", id: nextId("err"), hidden: true }));
  const tzId = nextId("tz");
  const tz = h("input", { id: tzId, type: "text", list: listId, value: s.timezone, autocomplete: "off", "aria-describedby": `${tzId}-help` });
  const tzField = h(
    "div",
    { class: "field", "data-field": "schedule.timezone" },
    h("label", { for: tzId }, "Time zone"),
    tz,
    h("datalist", { id: listId }, zones().map((z) => h("option", { value: z }))),
    h("p", { class: "help", id: `${tzId}-help` }, "IANA name, e.g. Europe/London; daylight saving is followed."),
    errLine("timezone"),
  );
  const dayBoxes = DAYS.map((d) => {
    const id = nextId("day");
    const box = h("input", { type: "checkbox", id, value: d, checked: s.days.includes(d) });
    return { d, box, node: h("span", { class: "inline-check" }, box, h("label", { for: id }, DAY_LABEL[d])) };
  });
  const daysField = h(
    "fieldset",
    { class: "field days", "data-field": "schedule.days" },
    h("legend", {}, "Days (none ticked = every day)"),
    h("div", { class: "day-boxes" }, dayBoxes.map((x) => x.node)),
    errLine("days"),
  );
  const ranges = rowsEditor({
    label: "Open hours",
    addLabel: "Add hours",
    rowLabel: (i) => `Hours ${i + 1}`,
    max: 24,
    rows: s.ranges.map(([from, to]) => ({ from, to })),
    blank: () => ({ from: "09:00", to: "17:00" }),
    draw(row, put) {
      const from = h("input", { type: "time", value: row.from, "data-key": "from" });
      from.addEventListener("input", () => put("from", from.value));
      const to = h("input", { type: "time", value: row.to, "data-key": "to" });
      to.addEventListener("input", () => put("to", to.value));
      return [rowField("From", from), rowField("To", to)];
    },
  });
  const holidayId = nextId("hol");
  const holidays = h("textarea", { id: holidayId, rows: 2, placeholder: "2026-12-25", "aria-describedby": `${holidayId}-help` }, s.holidays.join("\n"));
  const holidaysField = h(
    "div",
    { class: "field", "data-field": "schedule.holidays" },
    h("label", { for: holidayId }, "Holidays (closed all day)"),
    holidays,
    h("p", { class: "help", id: `${holidayId}-help` }, "One date per line, YYYY-MM-DD, in the schedule's time zone."),
    errLine("holidays"),
  );
  const general = errLine("schedule");
  body.append(
    tzField,
    daysField,
    h("div", { class: "field", "data-field": "schedule.ranges" }, h("span", { class: "label" }, "Open hours (none = all day; an end before its start runs past midnight)"), ranges.el),
    holidaysField,
    general,
  );
  const el = h(
    "fieldset",
    { class: "schedule wide" },
    h("legend", {}, "Schedule"),
    h("div", { class: "field check" }, on, h("label", { for: on.id }, "Only at certain times (outside them a later rule takes the call)")),
    body,
  );
  const show = (key, message, input) => {
    const line = errs[key];
    line.hidden = false;
    line.textContent = line.textContent ? `${line.textContent} ${message}` : message;
    input?.setAttribute("aria-invalid", "true");
    return input || line;
  };
  return {
    el,
    value() {
      if (!on.checked) return null;
      return {
        timezone: tz.value.trim(),
        days: dayBoxes.filter((x) => x.box.checked).map((x) => x.d),
        ranges: ranges.values().map((r) => [r.from, r.to]),
        holidays: holidays.value.split(/[\s,]+/).map((x) => x.trim()).filter(Boolean),
      };
    },
    clearErrors() {
      for (const line of Object.values(errs)) {
        line.hidden = true;
        line.textContent = "";
      }
      for (const input of [tz, holidays, ...dayBoxes.map((x) => x.box)]) input.removeAttribute("aria-invalid");
      ranges.clearErrors();
    },
    // An API error under "schedule…": shown at its part; answers what to focus.
    fieldError(field, message) {
      if (!field.startsWith("schedule")) return null;
      const rest = field.slice("schedule".length).replace(/^\./, "");
      if (rest.startsWith("timezone")) return show("timezone", message, tz);
      if (rest.startsWith("days")) return show("days", message, dayBoxes[0].box);
      if (rest.startsWith("holidays")) return show("holidays", message, holidays);
      if (rest.startsWith("ranges")) {
        const where = indexIn(rest, "ranges");
        return ranges.setError(where ? where.index : null, message);
      }
      return show("schedule", message, null);
    },
  };
}

// The traffic split editor: branches {target_type, target_id, percent} whose percents sum to 100.
function splitEditor(rule, refs) {
  const targetOptions = (type) => [{ value: "", label: "Choose…" }, ...(type === "agent" ? refs.agents : refs.groups).map((x) => ({ value: x.id, label: x.name }))];
  const total = h("p", { class: "split-total", "aria-live": "polite" });
  const first = { target_type: rule?.target_type || "group", target_id: rule?.target_id ?? null };
  const initial = rule?.targets?.length ? rule.targets : [{ ...first, percent: 50 }, { target_type: "group", target_id: null, percent: 50 }];
  const sum = (rows) => rows.reduce((acc, r) => acc + (Number(r.percent) || 0), 0);
  const editor = rowsEditor({
    label: "Split branches",
    addLabel: "Add branch",
    rowLabel: (i) => `Branch ${i + 1}`,
    min: 1,
    max: 10,
    rows: initial,
    blank: (rows) => ({ target_type: "group", target_id: null, percent: Math.max(1, 100 - sum(rows)) }),
    onChange: (rows) => {
      total.textContent = `Total: ${sum(rows)}%`;
      total.classList.toggle("off", sum(rows) !== 100);
    },
    draw(row, put) {
      const type = selectOf([{ value: "group", label: "Group" }, { value: "agent", label: "Voice agent" }], row.target_type, { "data-key": "target_type" });
      const target = selectOf(targetOptions(row.target_type), row.target_id ?? "", { "data-key": "target_id" });
      type.addEventListener("change", () => {
        put("target_type", type.value);
        put("target_id", null);
        target.replaceChildren(...targetOptions(type.value).map((o) => h("option", { value: o.value }, o.label)));
      });
      target.addEventListener("change", () => put("target_id", target.value ? Number(target.value) : null));
      const percent = h("input", { type: "number", min: 1, max: 100, value: row.percent ?? "", inputmode: "numeric", "data-key": "percent" });
      percent.addEventListener("input", () => put("percent", percent.value === "" ? null : Number(percent.value)));
      return [rowField("Kind", type), rowField("Group or agent", target), rowField("Percent", percent)];
    },
  });
  total.textContent = `Total: ${sum(initial)}%`;
  const el = h(
    "fieldset",
    { class: "split wide", "data-field": "targets", hidden: true },
    h("legend", {}, "Traffic split"),
    h("p", { class: "help" }, "Each call takes one branch at random by its percent (A/B tests); the percents must add up to 100."),
    editor.el,
    total,
  );
  return {
    el,
    value: () => editor.values().map((r) => ({ target_type: r.target_type, target_id: r.target_id, percent: r.percent })),
    clearErrors: () => editor.clearErrors(),
    fieldError(field, message) {
      const where = indexIn(field, "targets");
      if (!where) return null;
      return editor.setError(where.index, message, where.rest);
    },
  };
}

function ruleForm(rule, refs, done) {
  const editing = Boolean(rule);
  const split = Boolean(rule?.targets?.length);
  const targetOptions = (type) =>
    (type === "agent" ? refs.agents : refs.groups).map((x) => ({ value: x.id, label: x.name }));
  const splitBox = splitEditor(rule, refs);
  const scheduleBox = scheduleEditor(rule?.schedule || null);
  const f = form({
    submitLabel: editing ? "Save rule" : "Create rule",
    layout: "grid",
    onCancel: () => done(false),
    extra: h("div", { class: "rule-extras wide" }, splitBox.el, scheduleBox.el),
    fieldError: (field, message) => splitBox.fieldError(field, message) || scheduleBox.fieldError(field, message),
    fields: [
      { name: "name", label: "Name", value: rule?.name ?? "", empty: editing ? null : "omit" },
      { name: "pattern", label: "Called number pattern", required: true, value: rule?.pattern, help: "E.g. +1212*, +44207??????, or an exact number; * matches anything." },
      { name: "caller_pattern", label: "Caller pattern", value: rule?.caller_pattern ?? "", empty: editing ? null : "omit", help: "Optional: only calls from matching numbers." },
      {
        name: "target_type",
        label: "Send to",
        type: "select",
        value: split ? "split" : rule?.target_type || "group",
        options: [{ value: "group", label: "An agent group" }, { value: "agent", label: "One voice agent" }, { value: "split", label: "A traffic split (by percent)" }],
      },
      { name: "target_id", label: "Target", type: "select", required: true, value: split ? null : rule?.target_id, options: targetOptions(rule?.target_type || "group"), parse: Number },
      { name: "priority", label: "Priority", type: "number", min: 1, max: 100000, value: rule?.priority ?? 100, help: "Lower numbers are tried first." },
      {
        name: "domain_id",
        label: "Domain",
        type: "select",
        value: rule?.domain_id ?? "",
        options: [{ value: "", label: "Any of the tenant's domains" }, ...refs.domains.map((d) => ({ value: d.id, label: d.domain }))],
        parse: Number,
        empty: editing ? null : "omit",
      },
      { name: "enabled", label: "Enabled", type: "checkbox", value: rule ? rule.enabled : true },
    ],
    async onSubmit(values) {
      splitBox.clearErrors();
      scheduleBox.clearErrors();
      if (values.target_type === "split") {
        delete values.target_type;
        delete values.target_id;
        values.targets = splitBox.value();
      } else if (split) {
        values.targets = null; // the split ends: the one target below takes every call
      }
      const schedule = scheduleBox.value();
      if (schedule || rule?.schedule) values.schedule = schedule;
      if (editing) await api.put(`/api/inbound-routing-rules/${rule.id}`, values);
      else await api.post("/api/inbound-routing-rules", values);
      toast(editing ? "Rule saved." : "Rule created.");
      done(true);
    },
  });
  f.el.classList.add("rule-form");
  const type = f.input("target_type");
  const sync = () => {
    const isSplit = type.value === "split";
    f.show("target_id", !isSplit);
    splitBox.el.hidden = !isSplit;
  };
  type.addEventListener("change", () => {
    if (type.value !== "split") {
      const select = f.input("target_id");
      select.replaceChildren(...targetOptions(type.value).map((o) => h("option", { value: o.value }, o.label)));
    }
    sync();
  });
  sync();
  return f;
}

function dryRun(refs, highlight) {
  // POST /api/inbound-routing-rules/test changes nothing: the API lets viewers ask it too.
  const result = h("div", { class: "dry-result", "aria-live": "polite" });
  const f = form({
    submitLabel: "Test",
    layout: "inline",
    fields: [
      { name: "to", label: "Called number (To)", required: true, placeholder: "+12125550199" },
      { name: "from", label: "Caller (From)", placeholder: "+14155550100" },
      { name: "domain", label: "Domain", type: "select", options: [{ value: "", label: "Any" }, ...refs.domains.map((d) => ({ value: d.domain, label: d.domain }))] },
    ],
    async onSubmit(values) {
      const answer = await api.post("/api/inbound-routing-rules/test", values);
      highlight(answer.matched ? answer.rule.id : null);
      result.replaceChildren(
        answer.matched
          ? h(
              "div",
              { class: "alert ok", role: "status" },
              h("strong", {}, "Matched: "),
              `rule #${answer.rule.id}${answer.rule.name ? ` “${answer.rule.name}”` : ""} (pattern ${answer.rule.pattern}, priority ${answer.rule.priority})`,
              " → ",
              answer.target
                ? `${answer.target.type} “${answer.target.name ?? answer.target.id}”`
                : answer.split
                  ? `split: ${answer.split.map((b) => `${b.type} “${b.name ?? b.id}” ${b.percent}%`).join(" · ")}`
                  : "no target",
              h("div", { class: "muted" }, `Numbers as compared: to ${answer.normalized_to}, from ${answer.normalized_from || "—"}`),
            )
          : h("div", { class: "alert warn", role: "status" }, h("strong", {}, "No rule matches: "), "the call gets the tenant's no-agent answer.", h("div", { class: "muted" }, `Numbers as compared: to ${answer.normalized_to}, from ${answer.normalized_from || "—"}`)),
      );
    },
  });
  f.el.classList.add("dry-run");
  // A question, not a write: the Test button stays for viewers.
  f.el.querySelector("button[type=submit]")?.removeAttribute("data-write");
  return section("Which rule would take this call?", f.el, result);
}

// GET /api/analytics/splits: per branch of every split rule, over a range (the tenant's days).
function splitReport(rules) {
  const box = h("div", { class: "split-report" });
  const isoDay = (d) => `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
  const ruleName = (id) => {
    const r = rules.find((x) => x.id === id);
    return r ? `#${id}${r.name ? ` ${r.name}` : ""}` : `#${id} (deleted)`;
  };
  const load = (days) => {
    const start = new Date();
    start.setDate(start.getDate() - (days - 1));
    box.replaceChildren(
      later(api.get("/api/analytics/splits", { start_date: isoDay(start) }), (report) =>
        h(
          "div",
          {},
          h("p", { class: "muted" }, `${report.window.start_date} to ${report.window.end_date} (${report.window.timezone})`),
          table(
            [
              { label: "Rule", render: (b) => ruleName(b.rule_id) },
              { label: "Branch", render: (b) => `${b.target_type} “${b.name ?? b.split_target}”` },
              { label: "Set", render: (b) => (b.percent === null ? "removed" : `${b.percent}%`), className: "num" },
              { label: "Actual", render: (b) => fmtPercent(b.share), className: "num" },
              { label: "Calls", key: "calls", className: "num" },
              { label: "Answered", key: "answered", className: "num" },
              { label: "Success", render: (b) => fmtPercent(b.success_rate), className: "num" },
              { label: "Avg duration", render: (b) => fmtDuration(b.avg_duration), className: "num" },
              { label: "Talk time", render: (b) => fmtDuration(b.total_talk_time), className: "num" },
            ],
            report.data,
            { caption: "Outcomes per branch of each traffic split", empty: "No call has taken a split branch in this range.", rowAttrs: (b) => ({ "data-branch": `${b.rule_id}:${b.split_target}` }) },
          ),
        ),
      ),
    );
  };
  const range = form({
    submitLabel: "Show",
    layout: "inline",
    fields: [{ name: "days", label: "Over the last", type: "select", value: 30, options: [{ value: 1, label: "today" }, { value: 7, label: "7 days" }, { value: 30, label: "30 days" }], parse: Number }],
    async onSubmit(values) {
      load(values.days);
    },
  });
  range.el.classList.add("filters", "report-range");
  range.el.querySelector("button[type=submit]")?.removeAttribute("data-write"); // a read
  load(30);
  return section("Traffic split outcomes", h("p", { class: "help" }, "How the calls of each split rule spread over its branches and how they ended: compare agent providers side by side."), range.el, box);
}

export async function render({ navigate }) {
  const [rules, agents, groups, domains] = await Promise.all([
    all("/api/inbound-routing-rules"),
    all("/api/voice-agents"),
    all("/api/agent-groups"),
    all("/api/domains"),
  ]);
  const refs = { agents, groups, domains };
  const nameOf = (r) => (r.target_type === "agent" ? agents : groups).find((x) => x.id === r.target_id)?.name || `#${r.target_id}`;
  const domainOf = (id) => domains.find((d) => d.id === id)?.domain || `#${id}`;
  const editor = h("div", {});
  const notice = h("div", { "aria-live": "polite" });
  const reload = () => navigate("/inbound");
  const open = (rule) => {
    if (!agents.length && !groups.length) {
      editor.replaceChildren(h("div", { class: "alert warn" }, "Create a voice agent or a group first: a rule sends calls to one."));
      return;
    }
    const f = ruleForm(rule, refs, (changed) => (changed ? reload() : editor.replaceChildren()));
    editor.replaceChildren(section(rule ? `Edit rule #${rule.id}` : "New inbound rule", f.el));
    f.input("pattern").focus();
  };
  const list = table(
    [
      { label: "#", render: (r) => String(rules.indexOf(r) + 1), className: "num" },
      { label: "Name", render: (r) => r.name || "—" },
      { label: "Called", render: (r) => h("code", {}, r.pattern) },
      { label: "Caller", render: (r) => (r.caller_pattern ? h("code", {}, r.caller_pattern) : "any") },
      { label: "Target", render: (r) => (r.targets?.length ? `split: ${splitText(r, refs)}` : `${r.target_type}: ${nameOf(r)}`) },
      { label: "Schedule", render: (r) => scheduleText(r.schedule) },
      { label: "Domain", render: (r) => (r.domain_id ? domainOf(r.domain_id) : "any") },
      { label: "Priority", key: "priority", className: "num" },
      { label: "State", render: (r) => (r.enabled ? badge("enabled", "ok") : badge("disabled", "muted")) },
      {
        label: "Actions",
        write: true,
        className: "actions-cell",
        render: (r) =>
          canWrite()
            ? h(
                "div",
                { class: "row-actions" },
                button("Edit", () => open(r), { write: true, kind: "small", "aria-label": `Edit rule ${r.id}` }),
                button("Delete", async () => {
                  if (!(await confirmDialog(`Delete rule #${r.id} (${r.pattern})?`))) return;
                  try {
                    await api.del(`/api/inbound-routing-rules/${r.id}`);
                    reload();
                  } catch (err) {
                    notice.replaceChildren(errorBox(err));
                  }
                }, { write: true, kind: "small danger", "aria-label": `Delete rule ${r.id}` }),
              )
            : "—",
      },
    ],
    rules,
    { caption: "Inbound rules in evaluation order", empty: "No inbound rules yet: calls get the no-agent answer.", rowAttrs: (r) => ({ "data-rule": r.id }) },
  );
  const highlight = (id) => {
    list.querySelectorAll?.("tr[data-rule]").forEach((tr) => tr.classList.toggle("matched", Number(tr.dataset.rule) === id));
  };
  return h(
    "div",
    {},
    pageHeader("Inbound rules", button("New rule", () => open(null), { write: true, kind: "primary" })),
    editor,
    dryRun(refs, highlight),
    section("Rules, in the order they are tried", h("p", { class: "help" }, "The first enabled rule whose patterns match the call takes it."), notice, list),
    splitReport(rules),
  );
}
