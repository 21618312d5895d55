// The dashboard's shell: a hash router that loads one module per page (pages/*.js), the navigation,
// and who is signed in. Each page module exports `render(ctx)` → Node (or a promise of one) and may
// return `{node, dispose}` to stop what it started (the live page's WebSocket).
import { api } from "./api.js";
import { session } from "./session.js";
import { h, errorBox, loading, toast } from "./ui.js";

const ROUTES = [
  ["/login", "login", { public: true }],
  ["/register", "register", { public: true }],
  ["/overview", "overview"],
  ["/live", "live"],
  ["/agents", "agents"],
  ["/agents/new", "agent_form"],
  ["/agents/:id", "agent_form"],
  ["/groups", "groups"],
  ["/groups/new", "group"],
  ["/groups/:id", "group"],
  ["/inbound", "inbound"],
  ["/outbound", "outbound"],
  ["/trunks", "trunks"],
  ["/calls", "calls"],
  ["/calls/:token", "timeline"],
  ["/cdrs", "cdrs"],
  ["/domains", "domains"],
  ["/audit", "audit"],
  ["/users", "users", { admin: true }],
  ["/settings", "settings"],
  ["/profile", "profile"],
];

const NAV = [
  ["Monitor", [["Overview", "/overview"], ["Live calls", "/live"]]],
  ["Configure", [["Voice agents", "/agents"], ["Agent groups", "/groups"], ["Inbound rules", "/inbound"], ["Outbound rules", "/outbound"], ["Trunks", "/trunks"], ["Domains", "/domains"]]],
  ["Calls", [["Call records", "/calls"], ["CDRs", "/cdrs"], ["Webhook audit", "/audit"]]],
  ["Account", [["Users", "/users", { admin: true }], ["Tenant settings", "/settings"], ["My profile", "/profile"]]],
];

function match(path) {
  for (const [pattern, page, opts = {}] of ROUTES) {
    const names = [];
    const re = new RegExp(`^${pattern.replace(/:(\w+)/g, (_, n) => (names.push(n), "([^/]+)"))}$`);
    const m = path.match(re);
    if (m) {
      const params = Object.fromEntries(names.map((n, i) => [n, decodeURIComponent(m[i + 1])]));
      return { page, params, opts };
    }
  }
  return null;
}

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, queryText = ""] = raw.split("?");
  return { path, query: Object.fromEntries(new URLSearchParams(queryText)) };
}

export function navigate(path, query) {
  const q = query ? new URLSearchParams(Object.entries(query).filter(([, v]) => v !== "" && v !== undefined && v !== null)).toString() : "";
  const target = `#${path}${q ? `?${q}` : ""}`;
  if (location.hash === target) render();
  else location.hash = target;
}

function renderNav(current) {
  const nav = document.getElementById("sidebar");
  const user = session.user();
  nav.hidden = !user;
  document.getElementById("nav-toggle").hidden = !user;
  if (!user) return;
  nav.replaceChildren(
    ...NAV.map(([title, items]) =>
      h(
        "div",
        { class: "nav-group" },
        h("h2", {}, title),
        h(
          "ul",
          {},
          items
            .filter(([, , o]) => !o?.admin || user.role === "admin")
            .map(([label, path]) =>
              h("li", {}, h("a", { href: `#${path}`, "aria-current": current.startsWith(path) ? "page" : false }, label)),
            ),
        ),
      ),
    ),
  );
  const who = document.getElementById("who");
  who.replaceChildren(
    h("span", { class: "user-name" }, user.name),
    h("span", { class: `badge ${user.role === "admin" ? "info" : "muted"}`, title: user.role === "viewer" ? "Read-only access" : "Full access" }, user.role),
    h("button", { type: "button", class: "btn small", onclick: logout }, "Sign out"),
  );
}

async function logout() {
  try {
    await api.post("/api/logout");
  } catch {
    // the token may already be gone; signing out locally is what matters
  }
  session.clear();
  navigate("/login");
}

let disposeCurrent = null;
let renderSeq = 0;

async function render() {
  const { path, query } = parseHash();
  const main = document.getElementById("main");
  const user = session.user();
  if (disposeCurrent) {
    try {
      disposeCurrent();
    } catch {
      // a page's cleanup must not stop navigation
    }
    disposeCurrent = null;
  }
  const found = match(path);
  if (!found) {
    navigate(user ? "/overview" : "/login");
    return;
  }
  if (!found.opts.public && !user) {
    navigate("/login", path !== "/" ? { next: path } : undefined);
    return;
  }
  if (found.opts.public && user) {
    navigate("/overview");
    return;
  }
  if (found.opts.admin && user.role !== "admin") {
    main.replaceChildren(h("h1", {}, "Not allowed"), h("p", {}, "Only admins manage users."));
    return;
  }
  renderNav(path);
  document.getElementById("sidebar").classList.remove("open");
  document.getElementById("nav-toggle").setAttribute("aria-expanded", "false");
  const seq = ++renderSeq;
  main.replaceChildren(loading());
  try {
    const module = await import(`./pages/${found.page}.js`);
    const result = await module.render({ params: found.params, query, navigate, path });
    if (seq !== renderSeq) {
      result?.dispose?.();
      return;
    }
    const node = result instanceof Node ? result : result.node;
    disposeCurrent = result instanceof Node ? null : result.dispose || null;
    main.replaceChildren(node);
    main.dataset.page = found.page;
    (main.querySelector("h1") || main).focus({ preventScroll: true });
  } catch (err) {
    if (seq !== renderSeq) return;
    main.replaceChildren(h("h1", {}, "Something went wrong"), errorBox(err));
  }
}

session.onChange((why) => {
  if (why === "expired") {
    toast("Your session has ended; please sign in again.", "error");
    navigate("/login");
  }
});

document.getElementById("nav-toggle").addEventListener("click", (event) => {
  const nav = document.getElementById("sidebar");
  const open = nav.classList.toggle("open");
  event.currentTarget.setAttribute("aria-expanded", String(open));
});

window.addEventListener("hashchange", render);
render();
