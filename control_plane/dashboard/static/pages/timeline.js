// One call: its record, routing attempts and every event in order, with the engine that saw it.
import { all, api } from "../api.js";
import { fmtDuration, fmtTime, h, pageHeader, section, statusBadge, table } from "../ui.js";

export async function render({ params }) {
  const [call, agents, groups] = await Promise.all([
    api.get(`/api/calls/${encodeURIComponent(params.token)}`),
    all("/api/voice-agents").catch(() => []),
    all("/api/agent-groups").catch(() => []),
  ]);
  const agentName = (id) => agents.find((a) => a.id === id)?.name || `#${id}`;
  const groupName = (id) => groups.find((g) => g.id === id)?.name || `#${id}`;
  const facts = [
    ["Status", statusBadge(call.status)],
    ["Direction", call.direction || "—"],
    ["From", call.from_number || "—"],
    ["To", call.to_number || "—"],
    ["Domain", call.domain || "—"],
    ["Agent", call.agent_id ? h("a", { href: `#/agents/${call.agent_id}` }, agentName(call.agent_id)) : "—"],
    ["Group", call.group_id ? h("a", { href: `#/groups/${call.group_id}` }, groupName(call.group_id)) : "—"],
    ["Attempts", String(call.attempts)],
    ["Started", fmtTime(call.start_time)],
    ["Answered", fmtTime(call.answer_time)],
    ["Ended", fmtTime(call.end_time)],
    ["Duration", fmtDuration(call.duration)],
    ["Billed", fmtDuration(call.billsec)],
    ["Disposition", call.disposition || "—"],
  ];
  return h(
    "div",
    {},
    pageHeader("Call timeline", h("a", { href: "#/calls", class: "btn" }, "All calls")),
    section(null, h("p", { class: "muted" }, h("code", {}, call.session_token)), h("dl", { class: "facts grid-facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))),
    section(
      "Routing attempts",
      table(
        [
          { label: "Attempt", render: (a) => String(a.attempt ?? "—"), className: "num" },
          { label: "Agent", render: (a) => (a.agent_id ? agentName(a.agent_id) : "—") },
          { label: "Group", render: (a) => (a.group_id ? groupName(a.group_id) : "—") },
          { label: "Rule", render: (a) => (a.rule_id ? `#${a.rule_id}` : "—") },
          { label: "Outcome", render: (a) => a.outcome || "—" },
          { label: "Dial result", render: (a) => a.dial_status || "—" },
          { label: "At", render: (a) => fmtTime(a.at) },
        ],
        call.routing_attempts,
        { caption: "Routing attempts", empty: "No routing decision recorded." },
      ),
    ),
    section(
      "Events",
      h(
        "ol",
        { class: "timeline" },
        call.timeline.map((e) =>
          h(
            "li",
            {},
            h("time", { datetime: e.occurred_at }, fmtTime(e.occurred_at)),
            h("div", {}, h("strong", {}, e.kind), e.status ? [" → ", statusBadge(e.status)] : null, e.outcome ? ` · ${e.outcome}` : "", e.disposition ? ` · ${e.disposition}` : ""),
            h("div", { class: "muted" }, [e.source ? `seen by ${e.source}` : null, e.attempt ? `attempt ${e.attempt}` : null, e.agent_id ? `agent ${agentName(e.agent_id)}` : null, e.latency_us !== null && e.latency_us !== undefined ? `${(e.latency_us / 1000).toFixed(2)} ms` : null].filter(Boolean).join(" · ")),
            e.decision ? h("details", {}, h("summary", {}, "decision"), h("pre", { class: "json" }, JSON.stringify(e.decision, null, 2))) : null,
            e.payload ? h("details", {}, h("summary", {}, "payload"), h("pre", { class: "json" }, JSON.stringify(e.payload, null, 2))) : null,
          ),
        ),
      ),
    ),
  );
}
