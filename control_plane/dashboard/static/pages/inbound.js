// Inbound routing rules, in the order the engine tries them (priority, then id); create and edit;
// and the dry run: "which rule would take this call" (POST /api/inbound-routing-rules/test).
import { all, api } from "../api.js";
import { badge, button, canWrite, confirmDialog, errorBox, form, h, pageHeader, section, table, toast } from "../ui.js";

// Read-only summaries of a rule's schedule and traffic split (both are set through the API).
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

function ruleForm(rule, refs, done) {
  const editing = Boolean(rule);
  const split = Boolean(rule?.targets?.length);
  const targetOptions = (type) =>
    (type === "agent" ? refs.agents : refs.groups).map((x) => ({ value: x.id, label: x.name }));
  const f = form({
    submitLabel: editing ? "Save rule" : "Create rule",
    layout: "grid",
    onCancel: () => done(false),
    fields: [
      { name: "name", label: "Name", value: rule?.name ?? "", empty: editing ? null : "omit" },
      { name: "pattern", label: "Called number pattern", required: true, value: rule?.pattern, help: "E.g. +1212*, +44207??????, or an exact number; * matches anything." },
      { name: "caller_pattern", label: "Caller pattern", value: rule?.caller_pattern ?? "", empty: editing ? null : "omit", help: "Optional: only calls from matching numbers." },
      { name: "target_type", label: "Send to", type: "select", value: rule?.target_type || "group", options: [{ value: "group", label: "An agent group" }, { value: "agent", label: "One voice agent" }] },
      { name: "target_id", label: "Target", type: "select", required: true, value: rule?.target_id, options: targetOptions(rule?.target_type || "group"), parse: Number },
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
      if (split) {
        // A split rule's target is its first branch: the split itself is edited through the API.
        delete values.target_type;
        delete values.target_id;
      }
      if (editing) await api.put(`/api/inbound-routing-rules/${rule.id}`, values);
      else await api.post("/api/inbound-routing-rules", values);
      toast(editing ? "Rule saved." : "Rule created.");
      done(true);
    },
  });
  f.el.classList.add("rule-form");
  if (split || rule?.schedule) {
    f.el.prepend(
      h(
        "div",
        { class: "alert info rule-extras" },
        split ? h("div", {}, h("strong", {}, "Traffic split: "), splitText(rule, refs), " (target fields below are ignored)") : "",
        rule?.schedule ? h("div", {}, h("strong", {}, "Schedule: "), scheduleText(rule.schedule)) : "",
        h("div", { class: "muted" }, "Schedules and splits are edited through the API (PUT /api/inbound-routing-rules/{id})."),
      ),
    );
  }
  const type = f.input("target_type");
  type.addEventListener("change", () => {
    const select = f.input("target_id");
    select.replaceChildren(...targetOptions(type.value).map((o) => h("option", { value: o.value }, o.label)));
  });
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
  );
}
