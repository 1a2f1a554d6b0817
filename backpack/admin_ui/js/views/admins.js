// The admins of this deployment: list, invite (add with a password), remove.

import { api } from "../api.js";
import { attempt, clear, dialog, errorBox, field, formatTime, h, table } from "../ui.js";

export async function render(main, ctx) {
  const list = h("div", {});
  const invite = h("button.primary", { type: "button" }, "Invite an admin");
  main.append(h("div.head", {}, h("h1", {}, "Admins"), invite), list);

  async function load() {
    const { items } = await api.get("/admins");
    clear(list, table([
      { label: "Email", cell: (a) => [a.email, a.id === ctx.me.id ? h("span.muted", {}, " (you)") : null] },
      { label: "Added", cell: (a) => formatTime(a.created) },
      { label: "Actions", cell: (a) => removeButton(a) },
    ], items));
    list.querySelector("table")?.classList.add("stack");
  }

  function removeButton(admin) {
    const button = h("button.danger", { type: "button", "aria-label": `Remove ${admin.email}` }, "Remove");
    button.addEventListener("click", async () => {
      const ok = await dialog("Remove admin", h("p", {}, `Remove ${admin.email}? They are signed out at once.`), { submit: "Remove", danger: true });
      if (!ok) return;
      const done = await attempt(() => api.delete(`/admins/${encodeURIComponent(admin.id)}`), { success: `${admin.email} was removed.` });
      if (done !== undefined) await attempt(load);
    });
    return button;
  }

  invite.addEventListener("click", () => {
    const error = errorBox();
    const form = h("form", {},
      h("h2", {}, "Invite an admin"),
      h("p.muted", {}, "Give them the address and this first password; they sign in at /admin."),
      field("Email", { name: "email", type: "email", required: true }),
      field("Password", { name: "password", type: "password", required: true, minlength: "8", autocomplete: "new-password" }),
      error.el,
      h("div.actions", {},
        h("button.ghost", { type: "button", value: "cancel", onclick: () => box.close() }, "Cancel"),
        h("button.primary", { type: "submit" }, "Add admin")));
    const box = h("dialog", { "aria-label": "Invite an admin" }, form);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const added = await api.post("/admins", Object.fromEntries(new FormData(form)));
        box.close();
        await attempt(load, { success: `${added.email} can now sign in.` });
      } catch (failure) {
        error.show(failure);
      }
    });
    box.addEventListener("close", () => box.remove());
    document.body.append(box);
    box.showModal();
  });

  await load();
}
