// Users of the tenant (admins only): invite with a role, change role or password, remove.
import { api } from "../api.js";
import { crudPage } from "../crud.js";
import { badge, fmtTime } from "../ui.js";
import { session } from "../session.js";

const ROLES = [
  { value: "viewer", label: "Viewer (read only)" },
  { value: "admin", label: "Admin" },
];

export function render(ctx) {
  const me = session.user();
  return crudPage(
    {
      title: "Users",
      newLabel: "New user",
      path: "/api/users",
      list: (q) => api.get("/api/users", { page: q.page || 1, per_page: 50 }),
      label: (u) => `user ${u.email}`,
      editable: (u) => u.id !== me?.id,
      intro: "Admins change everything; viewers see everything and change nothing.",
      columns: [
        { label: "Name", key: "name" },
        { label: "E-mail", key: "email" },
        { label: "Role", render: (u) => badge(u.role, u.role === "admin" ? "info" : "muted") },
        { label: "Since", render: (u) => fmtTime(u.created_at) },
      ],
      fields: (u) =>
        u
          ? [
              { name: "name", label: "Name", required: true, value: u.name },
              { name: "role", label: "Role", type: "select", value: u.role, options: ROLES },
              { name: "password", label: "New password", type: "password", autocomplete: "new-password", help: "Leave empty to keep it; setting one signs the user out everywhere." },
            ]
          : [
              { name: "name", label: "Name", required: true },
              { name: "email", label: "E-mail", type: "email", required: true, autocomplete: "off" },
              { name: "role", label: "Role", type: "select", value: "viewer", options: ROLES },
              { name: "password", label: "Password", type: "password", required: true, autocomplete: "new-password", help: "At least 8 characters." },
            ],
    },
    ctx,
  );
}
