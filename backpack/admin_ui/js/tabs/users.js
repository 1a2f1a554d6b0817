// Users: list and search, create, verify, set a role, mail a reset link, delete.
// (No endpoint revokes another user's sessions yet; deleting a user or changing their
// password ends them.)

import { attempt, confirmByName, dialog, formatTime, h, table, toast } from "../ui.js";
import { pager } from "../data/widgets.js";

const PAGE_SIZE = 50;
const ROLE = "^[A-Za-z0-9_\\-]{1,64}$";

const escapeRegex = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

export async function render(el, ctx) {
  const client = await ctx.client();
  let search = "";
  const query = h("input", { type: "search", name: "q", placeholder: "Email contains…", autocomplete: "off", "aria-label": "Search users by email" });
  const searchForm = h("form.search", { role: "search" }, query, h("button", { type: "submit" }, "Search"));
  const create = h("button.primary", { type: "button" }, "New user");
  const listBox = h("div");
  const pages = pager(loadPage, (page) => draw(page.items), "User pages");
  el.append(h("div.tab-head", {}, h("h2", {}, "Users"), create), searchForm, listBox, pages.el);

  const path = (id) => `/api/users/${encodeURIComponent(id)}`;

  function loadPage(after) {
    const params = { limit: PAGE_SIZE, sort: "email" };
    if (after) params.after = after;
    if (search) params.filter = JSON.stringify({ email: { $regex: escapeRegex(search), $options: "i" } });
    return client.request("GET", "/api/users", { query: params });
  }

  async function patch(user, changes, message) {
    await client.request("PATCH", path(user.id), { body: changes });
    toast(message, "success");
    await pages.reload();
  }

  function actions(user) {
    const buttons = [];
    if (!user.verified) {
      buttons.push(h("button", { type: "button", onclick: () => attempt(() => patch(user, { verified: true }, `${user.email} is verified.`)) }, "Verify"));
    }
    buttons.push(
      h("button", { type: "button", onclick: () => attempt(() => setRole(user)) }, "Role…"),
      h("button", { type: "button", onclick: () => attempt(() => resetLink(user)) }, "Send reset link"),
      h("button", { type: "button", onclick: () => attempt(() => handLink(user)) }, "Reset link…"),
      h("button", { type: "button", onclick: () => attempt(() => signOut(user)) }, "Sign out everywhere"),
      h("button.danger", { type: "button", onclick: () => attempt(() => remove(user)) }, "Delete"));
    return h("div.row-actions", {}, buttons);
  }

  function draw(users) {
    listBox.replaceChildren(table([
      { label: "Email", cell: (u) => u.email },
      { label: "Role", cell: (u) => u.role },
      { label: "Verified", cell: (u) => (u.verified ? "yes" : "no") },
      { label: "Created", cell: (u) => formatTime(u.created) },
      { label: "Actions", cell: actions },
    ], users, { empty: search ? "No user matches." : "No users yet." }));
    listBox.querySelector("table")?.classList.add("stack");
  }

  async function setRole(user) {
    const values = await dialog(`Role of ${user.email}`,
      h("label", {}, "Role", h("input", { name: "role", value: user.role, required: true, pattern: ROLE, autocomplete: "off" })),
      { submit: "Set role" });
    if (!values || values.role === user.role) return;
    await patch(user, { role: values.role }, `${user.email} now has the role ${values.role}.`);
  }

  async function resetLink(user) {
    await client.request("POST", "/api/auth/password/request", { body: { email: user.email }, auth: false });
    toast(`A reset link was mailed to ${user.email}.`, "success");
  }

  /** A one-time reset link to hand over by other means (no mail needed). */
  async function handLink(user) {
    const made = await client.request("POST", `${path(user.id)}/reset-link`);
    const input = h("input", { value: made.link, readonly: true, "aria-label": "Reset link", class: "reset-link" });
    await dialog(`Reset link for ${user.email}`,
      [h("p", {}, "Valid 30 minutes, once. Give it to the user yourself."), input],
      { submit: "Done" });
  }

  async function signOut(user) {
    const done = await client.request("DELETE", `${path(user.id)}/sessions`);
    toast(`${user.email} was signed out of ${done.revoked} session(s).`, "success");
  }

  async function remove(user) {
    if (!(await confirmByName("Delete user", user.email))) {
      toast("Nothing was deleted: the email did not match.");
      return;
    }
    await client.request("DELETE", path(user.id));
    toast(`${user.email} and their sessions were deleted.`, "success");
    await pages.reload();
  }

  create.addEventListener("click", () => attempt(async () => {
    const values = await dialog("New user", [
      h("label", {}, "Email", h("input", { name: "email", type: "email", required: true, autocomplete: "off" })),
      h("label", {}, "Password (optional, 8 to 256 characters)", h("input", { name: "password", type: "password", minlength: 8, maxlength: 256, autocomplete: "new-password" })),
      h("label", {}, "Role", h("input", { name: "role", value: "user", required: true, pattern: ROLE, autocomplete: "off" })),
      h("label.check", {}, h("input", { name: "verified", type: "checkbox", value: "yes" }), " Verified"),
    ], { submit: "Create" });
    if (!values) return;
    const body = { email: values.email, role: values.role, verified: values.verified === "yes" };
    if (values.password) body.password = values.password;
    const user = await client.request("POST", "/api/users", { body });
    toast(`User ${user.email} created.`, "success");
    await pages.first();
  }));

  searchForm.addEventListener("submit", (event) => {
    event.preventDefault();
    search = query.value.trim();
    attempt(() => pages.first());
  });

  await pages.first();
}
