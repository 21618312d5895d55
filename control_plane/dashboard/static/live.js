// The live feed client (WS /api/live; format fixed in the team's live-format brief): connects with
// the user's token, hands each message to `onMessage`, and reconnects with a growing back-off when the
// connection drops (close 1013 = we fell behind; 1001 = server restarting). 4401 = token refused.
import { session } from "./session.js";

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];

export function liveFeed({ onMessage, onState }) {
  let socket = null;
  let attempt = 0;
  let timer = null;
  let stopped = false;

  function connect() {
    const token = session.token();
    if (!token || stopped) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    onState(attempt ? "reconnecting" : "connecting");
    socket = new WebSocket(`${scheme}://${location.host}/api/live?token=${encodeURIComponent(token)}`);
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === "hello") {
        const resumed = attempt > 0;
        attempt = 0;
        onState("open", { resumed, hello: message });
      }
      onMessage(message);
    });
    socket.addEventListener("close", (event) => {
      socket = null;
      if (stopped) return;
      if (event.code === 4401) {
        onState("refused");
        session.expired();
        return;
      }
      const wait = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)];
      attempt += 1;
      onState("lost", { wait, code: event.code });
      timer = setTimeout(connect, wait);
    });
  }

  connect();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      socket?.close(1000);
    },
  };
}
