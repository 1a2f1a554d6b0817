// The console's entry: theme, the signed-in admin, and hash routes to views.
// A view is a module exporting `render(main, ctx)`; ctx = {params, me, navigate, refreshMe}.

import { api, forgetClients, setUnauthorizedHandler } from "./api.js";
import { clear, h, showError } from "./ui.js";

const ROUTES = [
  [/^#\/setup$/, () => import("./views/setup.js"), { open: true }],
  [/^#\/login(?:\?next=(.*))?$/, () => import("./views/login.js"), { open: true }],
  [/^#\/admins$/, () => import("./views/admins.js"), {}],
  [/^#\/b\/([a-z][a-z0-9-]*)(?:\/([a-z]+))?(?:\?(.*))?$/, () => import("./views/backpack.js"), {}],
  [/^(?:#\/?)?$/, () => import("./views/dashboard.js"), {}],
];

const state = { me: null };
const main = document.getElementById("main");

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

async function refreshMe() {
  try {
    state.me = await api.get("/me", { quiet401: true });
  } catch (error) {
    if (error.status !== 401) throw error;
    state.me = null;
  }
  renderNav();
  return state.me;
}

function renderNav() {
  const nav = document.getElementById("nav");
  if (!state.me) {
    clear(nav);
    return;
  }
  const logout = h("button.ghost", { type: "button" }, "Sign out");
  logout.addEventListener("click", async () => {
    try {
      await api.post("/logout");
    } catch (error) {
      showError(error);
    }
    state.me = null;
    forgetClients();
    renderNav();
    navigate("#/login");
  });
  clear(nav,
    h("a", { href: "#/" }, "Backpacks"),
    h("a", { href: "#/admins" }, "Admins"),
    h("span.muted.me", {}, state.me.email),
    logout);
}

setUnauthorizedHandler((where) => {
  leave();
  state.me = null;
  forgetClients();
  renderNav();
  if (!where.startsWith("#/login")) navigate(`#/login?next=${encodeURIComponent(where || "#/")}`);
});

let routing = 0;
let leaving = null;

/** Run the cleanup of the view being left (close sockets, timers, subscriptions). */
function leave() {
  const cleanup = leaving;
  leaving = null;
  if (cleanup) {
    try {
      cleanup();
    } catch (error) {
      showError(error);
    }
  }
}

async function route() {
  const ticket = ++routing;
  const hash = location.hash || "#/";
  const found = ROUTES.map(([pattern, load, options]) => [hash.match(pattern), load, options]).find(([m]) => m);
  if (!found) {
    leave();
    clear(main, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to the backpacks")));
    return;
  }
  const [match, load, options] = found;
  try {
    if (!options.open && !state.me) {
      const { needed } = await api.get("/setup");
      if (needed) return navigate("#/setup");
      if (!(await refreshMe())) return navigate(`#/login?next=${encodeURIComponent(hash)}`);
    }
    const view = await load();
    if (ticket !== routing) return;
    leave();
    clear(main);
    const cleanup = await view.render(main, { params: match.slice(1), me: state.me, navigate, refreshMe });
    if (typeof cleanup === "function") {
      if (ticket === routing) leaving = cleanup;
      else cleanup();
    }
    if (ticket === routing) main.focus({ preventScroll: true });
  } catch (error) {
    if (ticket !== routing) return;
    showError(error);
    if (error.status !== 401) clear(main, h("h1", {}, "Something went wrong"), h("p", {}, error.message));
  }
}

function setTheme(theme) {
  document.documentElement.dataset.theme = theme;
  localStorage.setItem("backpack-theme", theme);
}

const saved = localStorage.getItem("backpack-theme");
setTheme(saved || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));
document.getElementById("theme").addEventListener("click", () =>
  setTheme(document.documentElement.dataset.theme === "dark" ? "light" : "dark"));

window.addEventListener("hashchange", route);
refreshMe().catch(() => null).finally(route);
