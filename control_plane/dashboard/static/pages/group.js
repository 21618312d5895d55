// One agent group: strategy and settings; members in priority order (drag and drop, or the up/down
// buttons: moving renumbers priorities 1..n), capacity and weight; each member's live counters from
// GET /api/agent-groups/{id}/stats, refreshed every few seconds; reset of the balancing counters;
// outlier ejection (settings.outlier) with who is ejected now and a button to let them back in; the
// overflow chain (settings.overflow) tried after the members. PATCH merges settings keys server-side,
// so each form sends only its own.
import { all, api } from "../api.js";
import { indexIn, rowField, rowsEditor, selectOf } from "../rows.js";
import { badge, button, canWrite, confirmDialog, errorBox, fmtPercent, fmtTime, form, h, nextId, pageHeader, section, table, toast } from "../ui.js";

export const STRATEGIES = [
  { value: "load_balanced", label: "Load balanced (fewest recent calls)" },
  { value: "priority", label: "Priority (lowest number first)" },
  { value: "round_robin", label: "Round robin" },
  { value: "weighted", label: "Weighted random (by member weight)" },
  { value: "least_active", label: "Least active (fewest active calls)" },
];
const NO_AGENT = [
  { value: "say_and_hangup", label: "Say a message and hang up" },
  { value: "reject_busy", label: "Reject as busy" },
  { value: "reject_congestion", label: "Reject as congestion" },
];
const STATS_EVERY_MS = 5000;

function settingsForm(group, navigate) {
  const s = group?.settings || {};
  const strategies = STRATEGIES.some((x) => x.value === group?.strategy) || !group ? STRATEGIES : [...STRATEGIES, { value: group.strategy, label: group.strategy }];
  const editing = Boolean(group);
  return form({
    readOnly: !canWrite(),
    submitLabel: editing ? "Save group" : "Create group",
    onCancel: editing ? null : () => navigate("/groups"),
    layout: "grid",
    fields: [
      { name: "name", label: "Name", required: true, value: group?.name },
      { name: "strategy", label: "Strategy", type: "select", value: group?.strategy || "load_balanced", options: strategies },
      { name: "enabled", label: "Enabled", type: "checkbox", value: group ? group.enabled : true },
      { type: "heading", label: "Settings" },
      { name: "settings.window_hours", label: "Window (hours)", type: "number", min: 1, max: 168, value: s.window_hours ?? 24, help: "How far back load balancing counts calls." },
      { name: "settings.max_attempts", label: "Max attempts per call", type: "number", min: 1, max: 10, value: s.max_attempts ?? 3 },
      { name: "settings.ring_timeout_s", label: "Ring timeout (s)", type: "number", min: 5, max: 120, value: s.ring_timeout_s ?? 30 },
      { name: "settings.sticky_hours", label: "Caller stickiness (hours)", type: "number", min: 0, max: 720, value: s.sticky_hours ?? 0, help: "A caller who reached an agent within this many hours gets it again when it is free; 0 = off." },
      { name: "settings.rotate_same_priority", label: "Priority: rotate among members of equal priority", type: "checkbox", value: s.rotate_same_priority ?? true, help: "Off: the lowest agent id of the level is always tried first." },
      { name: "settings.fallback_enabled", label: "Try the next agent when one is busy or does not answer", type: "checkbox", value: s.fallback_enabled ?? true },
      { name: "settings.no_agent_action", label: "When no agent is free", type: "select", value: s.no_agent_action || "say_and_hangup", options: NO_AGENT },
      { name: "settings.no_agent_message", label: "Message when no agent is free", type: "textarea", rows: 2, value: s.no_agent_message ?? "", empty: null, wide: true, help: "Empty: the tenant's message." },
    ],
    async onSubmit(values) {
      const saved = editing ? await api.patch(`/api/agent-groups/${group.id}`, values) : await api.post("/api/agent-groups", values);
      toast(editing ? "Group saved." : `Group “${saved.name}” created; now add its members.`);
      navigate(`/groups/${saved.id}`);
    },
  });
}

// settings.outlier: off (null) or the whole object (PATCH replaces the key, other settings stay).
const OUTLIER_DEFAULTS = { consecutive_failures: 5, failure_rate: null, window_s: 60, min_calls: 10, base_ejection_s: 30, max_ejection_s: 600, max_ejected_percent: 50, short_call_s: 0, allow_eject_all: false };
function outlierForm(group, navigate) {
  const o = group.settings?.outlier;
  const v = { ...OUTLIER_DEFAULTS, ...(o || {}) };
  const at = (key) => `settings.outlier.${key}`;
  const f = form({
    readOnly: !canWrite(),
    submitLabel: "Save outlier ejection",
    layout: "grid",
    className: "outlier-form",
    fields: [
      { name: "outlier_enabled", label: "Eject agents whose calls keep failing", type: "checkbox", value: Boolean(o), noSubmit: true, wide: true, help: "Busy, failed or unanswered dials (and answered calls shorter than the short-call limit) count as failures of the agent." },
      { name: at("consecutive_failures"), label: "Failures in a row", type: "number", min: 1, max: 100, value: v.consecutive_failures, help: "Eject after this many failures in a row." },
      { name: at("failure_rate"), label: "Failure rate (0 to 1)", type: "number", min: 0, max: 1, step: 0.01, value: v.failure_rate, empty: null, help: "Also eject above this share of failures over the window; empty = off." },
      { name: at("window_s"), label: "Failure-rate window (s)", type: "number", min: 10, max: 86400, value: v.window_s },
      { name: at("min_calls"), label: "Failure rate: minimum calls", type: "number", min: 1, max: 10000, value: v.min_calls },
      { name: at("base_ejection_s"), label: "First ejection (s)", type: "number", min: 1, max: 3600, value: v.base_ejection_s, help: "Doubles on each repeat…" },
      { name: at("max_ejection_s"), label: "Longest ejection (s)", type: "number", min: 1, max: 86400, value: v.max_ejection_s, help: "…up to this." },
      { name: at("max_ejected_percent"), label: "At most ejected (% of members)", type: "number", min: 0, max: 100, value: v.max_ejected_percent },
      { name: at("short_call_s"), label: "Short call (s)", type: "number", min: 0, max: 600, value: v.short_call_s, help: "An answered call shorter than this is a failure; 0 = off." },
      { name: at("allow_eject_all"), label: "May eject the last available agent", type: "checkbox", value: v.allow_eject_all, help: "Then calls get the no-agent answer or the overflow chain." },
    ],
    async onSubmit(values) {
      const on = f.input("outlier_enabled").checked;
      const body = { settings: { outlier: on ? values.settings.outlier : null } };
      await api.patch(`/api/agent-groups/${group.id}`, body);
      toast(on ? "Outlier ejection saved." : "Outlier ejection turned off.");
      navigate(`/groups/${group.id}`);
    },
  });
  const toggle = f.input("outlier_enabled");
  const sync = () => {
    for (const key of Object.keys(OUTLIER_DEFAULTS)) f.show(at(key), toggle.checked);
  };
  toggle.addEventListener("change", sync);
  sync();
  return f;
}

// settings.overflow: what comes after the members, in order.
const STEP_TYPES = [
  { value: "group", label: "Another group" },
  { value: "number", label: "A phone number" },
  { value: "announcement", label: "An announcement" },
];
const STEP_FIELDS = { group: ["group_id"], number: ["number"], announcement: ["message", "play_url"] };

export function stepText(step, groups) {
  if (step.type === "group") return `group “${groups.find((g) => g.id === step.group_id)?.name || `#${step.group_id}`}”`;
  if (step.type === "number") return `dial ${step.number}`;
  return `announce ${[step.message ? `“${step.message}”` : null, step.play_url ? `play ${step.play_url}` : null].filter(Boolean).join(" and ")}, hang up`;
}

function overflowSection(group, groups, navigate) {
  const steps = group.settings?.overflow || [];
  const others = groups.filter((g) => g.id !== group.id);
  const intro = h("p", { class: "help" }, "Tried in order after every member is busy, full, ejected or already tried. ", `Max attempts per call (${group.settings?.max_attempts ?? 3}) is the budget of the whole chain.`);
  if (!canWrite()) {
    return section(
      "Overflow chain",
      intro,
      steps.length ? h("ol", { class: "overflow-steps" }, steps.map((st) => h("li", {}, stepText(st, groups)))) : h("p", { class: "empty" }, "No overflow: when the members are exhausted, calls get the no-agent answer."),
    );
  }
  const groupOptions = [{ value: "", label: others.length ? "Choose a group" : "No other group yet" }, ...others.map((g) => ({ value: g.id, label: g.name }))];
  const editor = rowsEditor({
    label: "Overflow steps in order",
    addLabel: "Add overflow step",
    rowLabel: (i) => `Step ${i + 1}`,
    ordered: true,
    max: 10,
    rows: steps,
    blank: () => ({ type: others.length ? "group" : "number" }),
    draw(row, put) {
      const wraps = {};
      const type = selectOf(STEP_TYPES, row.type, { "data-key": "type" });
      const groupSel = selectOf(groupOptions, row.group_id ?? "", { "data-key": "group_id" });
      groupSel.addEventListener("change", () => put("group_id", groupSel.value ? Number(groupSel.value) : null));
      const number = h("input", { type: "tel", value: row.number ?? "", placeholder: "+12125550100", "data-key": "number", autocomplete: "off" });
      number.addEventListener("input", () => put("number", number.value.trim() || null));
      const message = h("input", { type: "text", value: row.message ?? "", "data-key": "message", placeholder: "All our agents are busy. Please call again later." });
      message.addEventListener("input", () => put("message", message.value.trim() || null));
      const play = h("input", { type: "url", value: row.play_url ?? "", "data-key": "play_url", placeholder: "https://…/busy.mp3" });
      play.addEventListener("input", () => put("play_url", play.value.trim() || null));
      wraps.group_id = rowField("Group", groupSel);
      wraps.number = rowField("Phone number", number);
      wraps.message = rowField("Message (spoken)", message);
      wraps.play_url = rowField("Or play (URL)", play);
      const sync = () => {
        for (const [key, wrap] of Object.entries(wraps)) wrap.hidden = !STEP_FIELDS[type.value].includes(key);
      };
      type.addEventListener("change", () => {
        put("type", type.value);
        sync();
      });
      sync();
      return [rowField("Then", type), ...Object.values(wraps)];
    },
  });
  const save = h("button", {
    type: "button",
    class: "btn primary",
    "data-write": "",
    onclick: async () => {
      editor.clearErrors();
      // Each step sends only the fields of its type (the API refuses the others).
      const overflow = editor.values().map((r) => {
        const step = { type: r.type };
        for (const key of STEP_FIELDS[r.type]) if (r[key] !== undefined && r[key] !== null && r[key] !== "") step[key] = r[key];
        return step;
      });
      save.disabled = true;
      try {
        await api.patch(`/api/agent-groups/${group.id}`, { settings: { overflow } });
        toast("Overflow chain saved.");
        navigate(`/groups/${group.id}`);
      } catch (err) {
        const errors = err.fieldErrors?.length ? err.fieldErrors : [{ field: null, message: err.message }];
        let first = null;
        for (const { field, message } of errors) {
          const where = field ? indexIn(field, "settings.overflow") : null;
          const shown = editor.setError(where ? where.index : null, field && !where ? `${field}: ${message}` : message, where?.rest);
          first = first || shown;
        }
        first?.focus?.();
      } finally {
        save.disabled = false;
      }
    },
  }, "Save overflow chain");
  return section("Overflow chain", intro, editor.el, h("div", { class: "form-actions" }, save));
}

// The members editor. `rows` keeps the order shown; moving renumbers priorities.
function membersEditor(group, reload) {
  const write = canWrite();
  let rows = [...group.members].sort((a, b) => a.priority - b.priority || a.agent_id - b.agent_id);
  const list = h("ol", { class: `members${write ? "" : " read-only"}`, "aria-label": "Members in priority order" });
  const status = h("p", { class: "sr-only", "aria-live": "assertive" });
  const error = h("div", { "aria-live": "polite" });
  let dirty = false;
  let dragged = null;
  const stats = new Map();

  function move(index, delta) {
    const target = index + delta;
    if (target < 0 || target >= rows.length) return;
    const [item] = rows.splice(index, 1);
    rows.splice(target, 0, item);
    renumber();
    draw();
    status.textContent = `${item.name} moved to position ${target + 1} of ${rows.length}.`;
    list.querySelector(`[data-agent="${item.agent_id}"] .${delta < 0 ? "up" : "down"}`)?.focus();
  }

  function renumber() {
    rows = rows.map((m, i) => ({ ...m, priority: i + 1 }));
    dirty = true;
    if (save) save.hidden = false;
  }

  function counters(m) {
    const s = stats.get(m.agent_id);
    if (!s) return h("div", { class: "counters muted" }, "counters: —");
    return h(
      "dl",
      { class: "counters" },
      h("dt", {}, "Window calls"), h("dd", {}, String(s.window_calls)),
      h("dt", {}, "Active"), h("dd", {}, `${s.active_calls}${m.capacity ? ` / ${m.capacity}` : ""}`),
      h("dt", {}, "Utilisation"), h("dd", {}, s.utilisation === null ? "unlimited" : fmtPercent(s.utilisation)),
      h("dt", {}, "Last chosen"), h("dd", {}, fmtTime(s.last_chosen_at)),
      s.ejected_until ? [h("dt", {}, "Ejected until"), h("dd", {}, badge(fmtTime(s.ejected_until), "bad"))] : null,
      !s.ejected_until && s.on_probation ? [h("dt", {}, "Outlier"), h("dd", {}, badge("on probation", "warn"))] : null,
      s.consecutive_failures ? [h("dt", {}, "Failures in a row"), h("dd", {}, String(s.consecutive_failures))] : null,
    );
  }

  function numberInput(m, key, label, min, max) {
    const id = nextId("member");
    const input = h("input", { id, type: "number", min, max, value: m[key], disabled: !write, "data-key": key, "aria-label": `${label} of ${m.name}` });
    input.addEventListener("input", () => {
      m[key] = input.value === "" ? "" : Number(input.value);
      dirty = true;
      if (save) save.hidden = false;
    });
    return h("div", { class: "mini-field" }, h("label", { for: id }, label), input);
  }

  function draw() {
    list.replaceChildren(
      ...rows.map((m, index) => {
        const item = h(
          "li",
          { class: "member", "data-agent": m.agent_id, draggable: write ? "true" : false },
          write ? h("span", { class: "handle", "aria-hidden": "true", title: "Drag to reorder" }, "⠿") : null,
          h("div", { class: "member-name" }, h("strong", {}, m.name), " ", h("span", { class: "muted" }, m.provider), m.enabled ? null : badge("agent disabled", "muted")),
          numberInput(m, "priority", "Priority", 1, 1000),
          numberInput(m, "capacity", "Capacity", 0, 10000),
          numberInput(m, "weight", "Weight", 1, 1000),
          counters(m),
          write
            ? h(
                "div",
                { class: "row-actions" },
                h("button", { type: "button", class: "btn small up", "data-write": "", disabled: index === 0, "aria-label": `Move ${m.name} up`, onclick: () => move(index, -1) }, "↑"),
                h("button", { type: "button", class: "btn small down", "data-write": "", disabled: index === rows.length - 1, "aria-label": `Move ${m.name} down`, onclick: () => move(index, 1) }, "↓"),
                h("button", {
                  type: "button",
                  class: "btn small danger",
                  "data-write": "",
                  "aria-label": `Remove ${m.name}`,
                  onclick: async () => {
                    if (!(await confirmDialog(`Remove ${m.name} from the group?`, "Remove"))) return;
                    try {
                      await api.del(`/api/agent-groups/${group.id}/members/${m.agent_id}`);
                      toast(`${m.name} removed.`);
                      reload();
                    } catch (err) {
                      error.replaceChildren(errorBox(err));
                    }
                  },
                }, "Remove"),
              )
            : null,
        );
        if (write) {
          item.addEventListener("dragstart", (event) => {
            dragged = m.agent_id;
            item.classList.add("dragging");
            event.dataTransfer.effectAllowed = "move";
            event.dataTransfer.setData("text/plain", String(m.agent_id));
          });
          item.addEventListener("dragend", () => item.classList.remove("dragging"));
          item.addEventListener("dragover", (event) => {
            event.preventDefault();
            item.classList.add("drop-target");
          });
          item.addEventListener("dragleave", () => item.classList.remove("drop-target"));
          item.addEventListener("drop", (event) => {
            event.preventDefault();
            item.classList.remove("drop-target");
            const from = rows.findIndex((r) => r.agent_id === Number(event.dataTransfer.getData("text/plain") || dragged));
            if (from < 0 || from === index) return;
            const [moved] = rows.splice(from, 1);
            rows.splice(index, 0, moved);
            renumber();
            draw();
            status.textContent = `${moved.name} moved to position ${index + 1}.`;
          });
        }
        return item;
      }),
    );
  }

  const save = write && h("button", {
    type: "button",
    class: "btn primary",
    "data-write": "",
    hidden: true,
    onclick: async () => {
      error.replaceChildren();
      try {
        await api.patch(`/api/agent-groups/${group.id}/members/bulk-update`, {
          members: rows.map((m) => ({ agent_id: m.agent_id, priority: m.priority, capacity: m.capacity, weight: m.weight })),
        });
        dirty = false;
        toast("Members saved.");
        reload();
      } catch (err) {
        const lines = err.fieldErrors?.length ? err.fieldErrors.map((e) => `${describe(e.field)}: ${e.message}`) : [err.message];
        error.replaceChildren(h("div", { class: "alert error", role: "alert" }, lines.map((l) => h("div", {}, l))));
      }
    },
  }, "Save members");

  function describe(field) {
    const m = /^members\[(\d+)\]\.(\w+)/.exec(field || "");
    return m && rows[Number(m[1])] ? `${rows[Number(m[1])].name} — ${m[2]}` : field;
  }

  async function refreshStats() {
    try {
      const answer = await api.get(`/api/agent-groups/${group.id}/stats`);
      stats.clear();
      for (const s of answer.members) stats.set(s.agent_id, s);
      drawEjected(answer.ejected || []);
      summary.textContent = `${answer.active_calls} active · ${answer.window_calls} calls in the last ${answer.window_hours} h${answer.round_robin_last ? ` · round robin last chose agent ${answer.round_robin_last.agent_id}` : ""}`;
      for (const m of rows) {
        const node = list.querySelector(`[data-agent="${m.agent_id}"] .counters`);
        node?.replaceWith(counters(m));
      }
    } catch (err) {
      summary.textContent = `Live counters unavailable: ${err.message}`;
    }
  }
  const summary = h("p", { class: "muted", "aria-live": "off" }, "Loading counters…");

  // Who settings.outlier has left out of the selection now (GET …/stats `ejected`), and the lift.
  const ejectedBox = h("div", { class: "ejected", "aria-live": "polite" });
  const nameOf = (id) => rows.find((m) => m.agent_id === id)?.name || `agent ${id}`;
  const REASONS = { consecutive: "failures in a row", failure_rate: "failure rate", probation: "failed on probation" };
  const FAILURES = { busy: "busy", failed: "failed", no_answer: "no answer", short_call: "short call" };
  function reasonText(reason) {
    const [trigger, failure] = String(reason || "").split(":");
    return [REASONS[trigger] || trigger, FAILURES[failure] || failure].filter(Boolean).join(" — ");
  }
  let ejectedShown = null;
  function drawEjected(ejected) {
    // Redrawn only when it changed: the 5-s refresh must not take the focus off "Let back in".
    const signature = JSON.stringify(ejected);
    if (signature === ejectedShown) return;
    ejectedShown = signature;
    ejectedBox.replaceChildren(
      h("h3", {}, "Ejected now"),
      ejected.length
        ? table(
            [
              { label: "Agent", render: (e) => nameOf(e.agent_id) },
              { label: "Why", render: (e) => reasonText(e.reason) },
              { label: "Since", render: (e) => fmtTime(e.since) },
              { label: "Back at", render: (e) => fmtTime(e.until) },
              { label: "In a row", key: "ejections", className: "num" },
              { label: "Call", render: (e) => h("a", { href: `#/calls/${e.session_token}`, "aria-label": `Call that ejected ${nameOf(e.agent_id)}` }, e.session_token.slice(0, 10) + "…") },
              {
                label: "Actions",
                write: true,
                className: "actions-cell",
                render: (e) =>
                  button("Let back in", async () => {
                    if (!(await confirmDialog(`Let ${nameOf(e.agent_id)} back into the group now (failures forgotten)?`, "Let back in"))) return;
                    try {
                      await api.del(`/api/agent-groups/${group.id}/ejections/${e.agent_id}`);
                      toast(`${nameOf(e.agent_id)} is back in the group.`);
                      refreshStats();
                    } catch (err) {
                      error.replaceChildren(errorBox(err));
                    }
                  }, { write: true, kind: "small", "aria-label": `Let ${nameOf(e.agent_id)} back in` }),
              },
            ],
            ejected,
            { caption: "Agents ejected from the group now", rowAttrs: (e) => ({ "data-ejected": e.agent_id }) },
          )
        : h("p", { class: "empty" }, group.settings?.outlier ? "No agent is ejected." : "Outlier ejection is off for this group."),
    );
  }

  draw();
  const add = write ? addMemberForm(group, rows, reload) : null;
  const reset = button("Reset balancing counters", async () => {
    if (!(await confirmDialog("Clear this group's balancing counters (window counts and the round-robin pointer)? Active calls are kept.", "Reset"))) return;
    try {
      const answer = await api.post(`/api/agent-groups/${group.id}/reset-strategy`);
      toast(answer.message);
      refreshStats();
    } catch (err) {
      error.replaceChildren(errorBox(err));
    }
  }, { write: true });
  const node = section(
    "Members",
    h("p", { class: "help" }, write ? "Drag a member, or use ↑ ↓, to change the order: moving renumbers the priorities 1, 2, 3… Then save." : "Members in priority order."),
    summary,
    status,
    rows.length ? list : h("p", { class: "empty" }, "No members yet."),
    error,
    ejectedBox,
    h("div", { class: "form-actions" }, save, reset, button("Refresh counters", refreshStats)),
    add,
  );
  refreshStats();
  const timer = setInterval(() => !dirty && refreshStats(), STATS_EVERY_MS);
  return { node, dispose: () => clearInterval(timer) };
}

function addMemberForm(group, rows, reload) {
  const box = h("div", { class: "add-member" });
  api.get(`/api/agent-groups/${group.id}/available-agents`).then(
    (answer) => {
      if (!answer.data.length) {
        box.replaceChildren(h("p", { class: "muted" }, "Every voice agent is already a member. ", h("a", { href: "#/agents/new" }, "Create another voice agent")));
        return;
      }
      const f = form({
        submitLabel: "Add member",
        layout: "inline",
        fields: [
          { name: "agent_id", label: "Voice agent", type: "select", options: answer.data.map((a) => ({ value: a.id, label: `${a.name} (${a.provider})` })), parse: Number, required: true },
          { name: "priority", label: "Priority", type: "number", min: 1, max: 1000, value: rows.length + 1 },
          { name: "capacity", label: "Capacity (0 = unlimited)", type: "number", min: 0, max: 10000, value: 0 },
          { name: "weight", label: "Weight", type: "number", min: 1, max: 1000, value: 100 },
        ],
        async onSubmit(values) {
          await api.post(`/api/agent-groups/${group.id}/members`, values);
          toast("Member added.");
          reload();
        },
      });
      box.replaceChildren(h("h3", {}, "Add a member"), f.el);
    },
    (err) => box.replaceChildren(errorBox(err)),
  );
  return box;
}

export async function render({ params, navigate }) {
  if (params.id === undefined) {
    return h("div", {}, pageHeader("New agent group"), section(null, settingsForm(null, navigate).el));
  }
  const [group, groups] = await Promise.all([api.get(`/api/agent-groups/${params.id}`), all("/api/agent-groups")]);
  const reload = () => navigate(`/groups/${group.id}`);
  const members = membersEditor(group, reload);
  const remove = button("Delete group", async () => {
    if (!(await confirmDialog(`Delete the group “${group.name}” and its memberships?`))) return;
    try {
      await api.del(`/api/agent-groups/${group.id}`);
      toast("Group deleted.");
      navigate("/groups");
    } catch (err) {
      node.prepend(errorBox(err));
    }
  }, { write: true, kind: "danger" });
  const node = h(
    "div",
    {},
    pageHeader(`Group: ${group.name}`, group.enabled ? badge("enabled", "ok") : badge("disabled", "muted"), remove),
    section("Strategy and settings", settingsForm(group, navigate).el),
    members.node,
    section("Outlier ejection", outlierForm(group, navigate).el),
    overflowSection(group, groups, navigate),
  );
  return { node, dispose: members.dispose };
}

