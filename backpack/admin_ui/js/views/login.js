// Sign in, then go back to `next` (where the admin was when the session ended).

import { api } from "../api.js";
import { errorBox, field, h } from "../ui.js";

function target(encoded) {
  const next = encoded ? decodeURIComponent(encoded) : "#/";
  return next.startsWith("#/") && !next.startsWith("#/login") ? next : "#/";
}

export async function render(main, ctx) {
  const next = target(ctx.params[0]);
  if (ctx.me) {
    ctx.navigate(next);
    return;
  }
  const { needed } = await api.get("/setup");
  if (needed) {
    ctx.navigate("#/setup");
    return;
  }
  const error = errorBox();
  const form = h("form.card.narrow", {},
    h("h1", {}, "Sign in"),
    field("Email", { name: "email", type: "email", required: true, autocomplete: "username" }),
    field("Password", { name: "password", type: "password", required: true, autocomplete: "current-password" }),
    error.el,
    h("div.actions", {}, h("button.primary", { type: "submit" }, "Sign in")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(form));
    error.show(null);
    try {
      await api.post("/login", values, { quiet401: true });
    } catch (failure) {
      error.show(failure);
      return;
    }
    await ctx.refreshMe();
    ctx.navigate(next);
  });
  main.append(form);
}
