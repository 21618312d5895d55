// Live calls: rows appear, change and end in place from the WebSocket feed (no polling); the table is
// seeded from GET /api/calls/active and re-seeded after a reconnect. Each row links to the timeline.
import { api, all } from "../api.js";
import { liveFeed } from "../live.js";
import { fmtDuration, h, pageHeader, section, statusBadge } from "../ui.js";

const KEEP_ENDED = 25;

export async function render() {
  const [agents, groups] = await Promise.all([all("/api/voice-agents").catch(() => []), all("/api/agent-groups").catch(() => [])]);
  const agentName = Object.fromEntries(agents.map((a) => [a.id, a.name]));
  const groupName = Object.fromEntries(groups.map((g) => [g.id, g.name]));
  const calls = new Map(); // session_token → call
  const ended = []; // tokens, newest first

  const banner = h("div", { class: "conn", role: "status", "aria-live": "polite", "data-state": "connecting" }, "Connecting…");
  const activeBody = h("tbody", {});
  const endedBody = h("tbody", {});
  const counters = {
    active: h("dd", { "data-live": "active" }, "—"),
    minute: h("dd", { "data-live": "minute" }, "—"),
  };
  const perAgent = h("ul", { class: "per-agent" });

  const head = (cols) => h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c))));
  const COLS = ["Call", "From", "To", "Direction", "Agent", "Group", "Status", "Attempt", "Duration"];

  function rowFor(call) {
    const seconds = call.duration ?? (call.started ? Math.max(0, Math.round((Date.now() - call.started) / 1000)) : null);
    return h(
      "tr",
      { "data-token": call.token, "data-status": call.status || "" },
      h("td", {}, h("a", { href: `#/calls/${encodeURIComponent(call.token)}`, "aria-label": `Timeline of call ${call.token}` }, call.token.slice(0, 12))),
      h("td", {}, call.from || "—"),
      h("td", {}, call.to || "—"),
      h("td", {}, call.direction || "—"),
      h("td", {}, call.agent_id ? agentName[call.agent_id] || `#${call.agent_id}` : "—"),
      h("td", {}, call.group_id ? groupName[call.group_id] || `#${call.group_id}` : "—"),
      h("td", {}, statusBadge(call.status), call.disposition && call.ended ? [" ", statusBadge(call.disposition)] : null),
      h("td", { class: "num" }, call.attempt ?? "—"),
      h("td", { class: "num duration" }, fmtDuration(seconds)),
    );
  }

  function place(call) {
    const old = activeBody.querySelector(`tr[data-token="${CSS.escape(call.token)}"]`);
    const row = rowFor(call);
    if (call.ended) {
      old?.remove();
      const existing = endedBody.querySelector(`tr[data-token="${CSS.escape(call.token)}"]`);
      if (existing) existing.replaceWith(row);
      else endedBody.prepend(row);
      while (endedBody.children.length > KEEP_ENDED) {
        const last = endedBody.lastElementChild;
        calls.delete(last.dataset.token);
        last.remove();
      }
    } else if (old) {
      old.replaceWith(row);
    } else {
      activeBody.prepend(row);
    }
    empty.hidden = activeBody.children.length > 0;
    noneEnded.hidden = endedBody.children.length > 0;
  }

  function apply(message) {
    if (message.type === "stats") {
      counters.active.textContent = String(message.active_calls);
      counters.minute.textContent = String(message.calls_last_minute);
      perAgent.replaceChildren(
        ...Object.entries(message.per_agent_active || {}).map(([id, n]) => h("li", {}, `${agentName[id] || `#${id}`}: ${n}`)),
      );
      return;
    }
    if (!message.session_token) return;
    const call = calls.get(message.session_token) || { token: message.session_token, started: Date.parse(message.at) || Date.now() };
    // Frames may arrive out of order (the feed keeps no call state): a late "ringing" after the end
    // does not bring the call back; its other fields still fill in.
    const late = call.ended && (message.type === "call.status" || message.type === "call.routed");
    for (const key of ["status", "direction", "from", "to", "agent_id", "group_id", "rule_id", "attempt", "outcome", "disposition", "duration"]) {
      if (late && key === "status") continue;
      if (message[key] !== null && message[key] !== undefined) call[key] = message[key];
    }
    if (message.type === "call.ended" || message.type === "cdr.received") {
      call.ended = true;
      if (call.duration === undefined) call.duration = Math.max(0, Math.round(((Date.parse(message.at) || Date.now()) - call.started) / 1000));
    }
    calls.set(call.token, call);
    place(call);
  }

  async function seed() {
    try {
      const answer = await api.get("/api/calls/active");
      const live = new Set(answer.data.map((c) => c.session_token));
      for (const [token, call] of calls) if (!call.ended && !live.has(token)) calls.delete(token);
      activeBody.replaceChildren();
      for (const c of answer.data) {
        const call = { ...(calls.get(c.session_token) || {}), token: c.session_token, from: c.from, to: c.to, direction: c.direction, status: c.status, agent_id: c.agent_id, group_id: c.group_id, started: Date.parse(c.started_at) || Date.now() - c.duration_seconds * 1000 };
        calls.set(call.token, call);
        place(call);
      }
      empty.hidden = activeBody.children.length > 0;
    } catch {
      // the feed still shows what happens from now on
    }
  }

  const empty = h("p", { class: "empty" }, "No calls in progress.");
  const noneEnded = h("p", { class: "empty" }, "No call has ended since this page opened.");
  const feed = liveFeed({
    onMessage: apply,
    onState(state, info) {
      banner.dataset.state = state;
      if (state === "open") {
        banner.textContent = "Live: connected.";
        if (info.resumed) seed();
      } else if (state === "lost") {
        const why = info.code === 1013 ? "The feed fell behind" : info.code === 1001 ? "The server is restarting" : "Connection lost";
        banner.textContent = `${why} — reconnecting in ${Math.ceil(info.wait / 1000)} s…`;
      } else if (state === "reconnecting") {
        banner.textContent = "Connection lost — reconnecting…";
      } else if (state === "refused") {
        banner.textContent = "The server refused the live feed: sign in again.";
      } else {
        banner.textContent = "Connecting…";
      }
    },
  });
  seed();
  // Durations of calls in progress tick locally once a second (no request).
  const ticker = setInterval(() => {
    for (const row of activeBody.children) {
      const call = calls.get(row.dataset.token);
      if (call?.started) row.querySelector(".duration").textContent = fmtDuration(Math.round((Date.now() - call.started) / 1000));
    }
  }, 1000);

  const node = h(
    "div",
    {},
    pageHeader("Live calls"),
    banner,
    h("dl", { class: "stat-row" }, h("div", { class: "stat" }, h("dt", {}, "Active calls"), counters.active), h("div", { class: "stat" }, h("dt", {}, "Calls in the last minute"), counters.minute), h("div", { class: "stat" }, h("dt", {}, "Active per agent"), h("dd", {}, perAgent))),
    section("In progress", h("div", { class: "table-wrap" }, h("table", { id: "live-active" }, h("caption", { class: "sr-only" }, "Calls in progress"), head(COLS), activeBody)), empty),
    section("Recently ended", h("div", { class: "table-wrap" }, h("table", { id: "live-ended" }, h("caption", { class: "sr-only" }, "Recently ended calls"), head(COLS), endedBody)), noneEnded),
  );
  return {
    node,
    dispose() {
      feed.stop();
      clearInterval(ticker);
    },
  };
}
