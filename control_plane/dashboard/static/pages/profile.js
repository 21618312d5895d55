// The signed-in user's own name and password (viewers may change these too).
import { api } from "../api.js";
import { session } from "../session.js";
import { form, h, pageHeader, section, toast } from "../ui.js";

export async function render() {
  const me = await api.get("/api/user");
  const name = form({
    submitLabel: "Save name",
    fields: [{ name: "name", label: "Name", required: true, value: me.name }],
    async onSubmit(values) {
      session.updateUser(await api.put("/api/user", values));
      toast("Name saved.");
    },
  });
  const password = form({
    submitLabel: "Change password",
    fields: [
      { name: "current_password", label: "Current password", type: "password", required: true, autocomplete: "current-password" },
      { name: "password", label: "New password", type: "password", required: true, autocomplete: "new-password" },
      { name: "password_confirmation", label: "Repeat the new password", type: "password", required: true, autocomplete: "new-password" },
    ],
    async onSubmit(values) {
      const answer = await api.put("/api/user/password", values);
      password.el.reset();
      toast(answer.message);
    },
  });
  // Both are the user's own: viewers may submit them.
  for (const f of [name, password]) f.el.querySelector("button[type=submit]")?.removeAttribute("data-write");
  return h(
    "div",
    {},
    pageHeader("My profile"),
    section("Account", h("p", {}, `${me.email} · ${me.role}`), name.el),
    section("Password", password.el),
  );
}
