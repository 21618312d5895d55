// Register: a new tenant and its first admin.
import { request } from "../api.js";
import { session } from "../session.js";
import { form, h } from "../ui.js";

export function render({ navigate }) {
  document.title = "Create a tenant · Voice agent load balancer";
  const f = form({
    submitLabel: "Create tenant",
    fields: [
      { name: "name", label: "Your name", required: true, autocomplete: "name" },
      { name: "email", label: "E-mail", type: "email", required: true, autocomplete: "username" },
      { name: "tenant_name", label: "Organisation", help: "The tenant's name; defaults to “<your name>'s organisation”." },
      { name: "password", label: "Password", type: "password", required: true, autocomplete: "new-password", help: "At least 8 characters." },
      { name: "password_confirmation", label: "Repeat the password", type: "password", required: true, autocomplete: "new-password", empty: "" },
    ],
    async onSubmit(values) {
      const answer = await request("POST", "/api/register", { body: values, auth: false });
      session.signIn(answer.token, answer.user, false);
      navigate("/overview");
    },
  });
  return h(
    "div",
    { class: "auth-page" },
    h(
      "section",
      { class: "card auth-card" },
      h("h1", { tabindex: "-1" }, "Create a tenant"),
      f.el,
      h("p", {}, "Already registered? ", h("a", { href: "#/login" }, "Sign in")),
    ),
  );
}
