// One agent group: strategy and settings; members in priority order (drag and drop, or the up/down
// buttons: moving renumbers priorities 1..n), capacity and weight; each member's live counters from
// GET /api/agent-groups/{id}/stats, refreshed every few seconds; reset of the balancing counters.
import { api } from "../api.js";
import { badge, button, canWrite, confirmDialog, errorBox, fmtPercent, fmtTime, form, h, nextId, pageHeader, section, toast } from "../ui.js";

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
  const group = await api.get(`/api/agent-groups/${params.id}`);
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
  );
  return { node, dispose: members.dispose };
}

