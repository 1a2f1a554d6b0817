// First run: create the first admin, who is signed in at once.

import { api } from "../api.js";
import { errorBox, field, h } from "../ui.js";

export async function render(main, ctx) {
  const { needed } = await api.get("/setup");
  if (!needed) {
    ctx.navigate("#/login");
    return;
  }
  const error = errorBox();
  const form = h("form.card.narrow", {},
    h("h1", {}, "Welcome to Backpack"),
    h("p.muted", {}, "Create the first admin of this deployment."),
    field("Email", { name: "email", type: "email", required: true, autocomplete: "username" }),
    field("Password", { name: "password", type: "password", required: true, minlength: "8", autocomplete: "new-password" }),
    field("Repeat the password", { name: "repeat", type: "password", required: true, autocomplete: "new-password" }),
    error.el,
    h("div.actions", {}, h("button.primary", { type: "submit" }, "Create admin")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(form));
    if (values.password !== values.repeat) {
      error.show({ message: "The two passwords differ." });
      return;
    }
    error.show(null);
    try {
      await api.post("/setup", { email: values.email, password: values.password });
    } catch (failure) {
      error.show(failure);
      return;
    }
    await ctx.refreshMe();
    ctx.navigate("#/");
  });
  main.append(form);
}
