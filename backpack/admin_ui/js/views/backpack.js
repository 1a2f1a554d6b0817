// One backpack: header (status, URLs, keys, start/stop) and its tabs.
// A tab is js/tabs/<tab>.js exporting render(el, ctx) that may return a cleanup function.

import { api, backpackClient, forgetClients } from "../api.js";
import { attempt, clear, copyButton, dialog, h, statusBadge, toast } from "../ui.js";

const TABS = [
  ["collections", "Collections"], ["data", "Data"], ["users", "Users"], ["files", "Files"],
  ["monitoring", "Monitoring"], ["logs", "Logs"], ["settings", "Settings"], ["backups", "Backups"],
  ["site", "Site"],
];

export async function render(main, ctx) {
  const [name, tab = "collections", queryText = ""] = ctx.params;
  if (!TABS.some(([id]) => id === tab)) {
    clear(main, h("h1", {}, "Not found"), h("p", {}, `There is no tab “${tab}”. `, h("a", { href: `#/b/${name}` }, "Back")));
    return undefined;
  }
  const instance = await api.get(`/instances/${encodeURIComponent(name)}`);
  const header = h("div", {});
  const panel = h("section.tab-panel", { id: "tab-panel", role: "tabpanel", "aria-label": tab });
  const nav = h("nav.tabs", { "aria-label": "Backpack sections" },
    TABS.map(([id, label]) => h("a", { href: `#/b/${name}/${id}`, "aria-current": id === tab ? "page" : null }, label)));
  main.append(header, nav, panel);
  renderHeader(header, instance, ctx);

  const module = await import(`../tabs/${tab}.js`).catch((error) => ({ failed: error }));
  if (module.failed) {
    clear(panel, h("p.field-error", { role: "alert" }, `This tab could not be loaded: ${module.failed.message}`));
    return undefined;
  }
  const cleanup = await module.render(panel, {
    name,
    instance,
    client: () => backpackClient(name),
    api,
    navigate: ctx.navigate,
    query: new URLSearchParams(queryText),
  });
  return typeof cleanup === "function" ? cleanup : undefined;
}

function renderHeader(el, instance, ctx) {
  const { name, urls } = instance;
  const running = instance.status === "running";
  const toggle = h("button", { type: "button" }, running ? "Stop" : "Start");
  toggle.addEventListener("click", async () => {
    toggle.disabled = true;
    const updated = await attempt(() => api.post(`/instances/${name}/${running ? "stop" : "start"}`),
      { success: `${name} ${running ? "stopped" : "started"}.` });
    toggle.disabled = false;
    if (updated) renderHeader(clear(el), updated, ctx);
  });
  const link = (href) => h("a", { href, target: "_blank", rel: "noopener" }, href);
  const keyBox = h("div.key", {});
  const show = h("button", { type: "button" }, "Show secret key");
  show.addEventListener("click", async () => {
    const keys = await attempt(() => api.get(`/instances/${name}/keys`));
    if (keys) showKey(keyBox, keys.secret_key);
  });
  const rotate = h("button.danger", { type: "button" }, "Rotate key");
  rotate.addEventListener("click", async () => {
    const ok = await dialog("Rotate the secret key", h("p", {},
      "The current key stops working at once, and with it signed file URLs, list cursors and console tokens. ",
      "Servers that use the old key must be given the new one."), { submit: "Rotate key", danger: true });
    if (!ok) return;
    const keys = await attempt(() => api.post(`/instances/${name}/keys/rotate`), { success: "The key was rotated." });
    if (keys) {
      forgetClients();
      showKey(keyBox, keys.secret_key);
    }
  });
  clear(el,
    h("div.head", {},
      h("h1", {}, name, " ", statusBadge(instance.status)),
      h("div.buttons", {}, toggle)),
    instance.reason ? h("p.field-error", { role: "alert" }, instance.reason) : null,
    h("dl.urls", {},
      h("dt", {}, "API (host form)"), h("dd", {}, link(urls.host), " ", copyButton(urls.host)),
      h("dt", {}, "API (path form)"), h("dd", {}, link(urls.api), " ", copyButton(urls.api)),
      h("dt", {}, "Site"), h("dd", {}, link(urls.host_site), " · ", link(urls.site))),
    h("div.keys", {}, show, rotate, keyBox));
  if (!running) toast(`${name} is ${instance.status}: its API answers 503 until it is started.`, "info");
}

function showKey(box, key) {
  const hide = h("button.ghost", { type: "button" }, "Hide");
  hide.addEventListener("click", () => clear(box));
  clear(box, h("code.secret", { "aria-label": "Secret key" }, key), " ", copyButton(key), " ", hide);
}
