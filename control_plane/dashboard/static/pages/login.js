// Sign in: e-mail and password → a bearer token kept in this tab (or, if asked, this browser).
import { request } from "../api.js";
import { session } from "../session.js";
import { form, h } from "../ui.js";

export function render({ query, navigate }) {
  document.title = "Sign in · Voice agent load balancer";
  const f = form({
    submitLabel: "Sign in",
    fields: [
      { name: "email", label: "E-mail", type: "email", required: true, autocomplete: "username" },
      { name: "password", label: "Password", type: "password", required: true, autocomplete: "current-password" },
      { name: "remember", label: "Keep me signed in on this browser", type: "checkbox", noSubmit: true },
    ],
    async onSubmit(values) {
      const answer = await request("POST", "/api/login", { body: values, auth: false });
      session.signIn(answer.token, answer.user, f.input("remember").checked);
      navigate(query.next && query.next.startsWith("/") ? query.next : "/overview");
    },
  });
  return h(
    "div",
    { class: "auth-page" },
    h(
      "section",
      { class: "card auth-card" },
      h("h1", { tabindex: "-1" }, "Sign in"),
      f.el,
      h("p", {}, "No account yet? ", h("a", { href: "#/register" }, "Create a tenant")),
    ),
  );
}
