// Every backpack: status, URLs, traffic sparklines, storage, users; create, stop/start, delete.
// The list renders from one request; each row's metrics arrive afterwards, a few at a time.

import { api } from "../api.js";
import {
  attempt, clear, confirmByName, copyButton, errorBox, formatBytes, h, sparkline, statusBadge, toast,
} from "../ui.js";

const METRICS_CONCURRENCY = 6;
const COLUMNS = ["Backpack", "Status", "API URL", "Requests (1 h)", "Errors (1 h)", "Storage", "Users", "Actions"];

function sdkSnippet(instance) {
  return `import { createClient } from "${instance.urls.host}/api/sdk.js";\n` +
    `const bp = createClient("${instance.urls.host}");`;
}

export async function render(main, ctx) {
  const created = h("div", {});
  const body = h("tbody", {});
  const list = h("div", {});
  main.append(
    h("div.head", {}, h("h1", {}, "Backpacks")),
    createForm(ctx, created, () => load()),
    created,
    list);

  async function load() {
    const { items } = await api.get("/instances");
    clear(body, items.map((instance) => row(instance)));
    clear(list, items.length
      ? h("div.table-wrap", {}, h("table.stack.backpacks", {},
        h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", { scope: "col" }, c)))),
        body))
      : h("p.muted", {}, "No backpack yet: create the first one above."));
    performance.mark("dashboard-list");
    fetchMetrics([...body.rows]);
  }

  function row(instance) {
    const tr = h("tr", { dataset: { name: instance.name } },
      cell("Backpack", h("a", { href: `#/b/${instance.name}` }, instance.name)),
      cell("Status", statusBadge(instance.status), instance.reason ? h("div.muted", {}, instance.reason) : null),
      cell("API URL", h("a.url", { href: instance.urls.host, target: "_blank", rel: "noopener" }, instance.urls.host)),
      cell("Requests (1 h)", h("span.requests.muted", {}, "…")),
      cell("Errors (1 h)", h("span.errors.muted", {}, "…")),
      cell("Storage", formatBytes(instance.stats?.storage_bytes)),
      cell("Users", instance.stats ? String(instance.stats.users) : "—"),
      cell("Actions", actions(instance)));
    tr.instance = instance;
    return tr;
  }

  function actions(instance) {
    const running = instance.status === "running";
    const toggle = h("button", { type: "button" }, running ? "Stop" : "Start");
    toggle.addEventListener("click", async () => {
      toggle.disabled = true;
      const verb = running ? "stop" : "start";
      const updated = await attempt(() => api.post(`/instances/${instance.name}/${verb}`),
        { success: `${instance.name} ${running ? "stopped" : "started"}.` });
      toggle.disabled = false;
      if (updated) replace(instance.name, updated);
    });
    const remove = h("button.danger", { type: "button", "aria-label": `Delete ${instance.name}` }, "Delete");
    remove.addEventListener("click", async () => {
      const confirmed = await confirmByName("Delete backpack", instance.name);
      if (!confirmed) {
        toast("Nothing was deleted: the name was not typed.", "info");
        return;
      }
      const path = `/instances/${instance.name}?confirm=${encodeURIComponent(instance.name)}`;
      const done = await attempt(() => api.delete(path), { success: `${instance.name} was deleted.` });
      if (done !== undefined) await attempt(load);
    });
    return h("div.buttons", {}, toggle, remove);
  }

  function replace(name, instance) {
    const old = [...body.rows].find((tr) => tr.dataset.name === name);
    if (!old) return;
    const fresh = row(instance);
    old.replaceWith(fresh);
    fetchMetrics([fresh]);
  }

  await load();
}

function cell(label, ...children) {
  return h("td", { dataset: { label } }, children);
}

/** Fill in each row's sparklines, METRICS_CONCURRENCY requests at a time. */
function fetchMetrics(rows) {
  const queue = [...rows];
  const worker = async () => {
    while (queue.length) {
      const tr = queue.shift();
      if (!tr.isConnected) continue;
      const name = tr.dataset.name;
      try {
        const series = await api.get(`/instances/${name}/metrics?window=1h`);
        const requests = series.points.map((p) => p.requests);
        const errors = series.points.map((p) => p.errors + p.client_errors);
        clear(tr.querySelector(".requests"), sparkline(requests, { label: `Requests per minute of ${name}` }), ` ${series.totals.requests}`);
        clear(tr.querySelector(".errors"), sparkline(errors, { label: `Errors per minute of ${name}` }), ` ${series.totals.errors + series.totals.client_errors}`);
      } catch (error) {
        clear(tr.querySelector(".requests"), h("span.field-error", {}, `Metrics unavailable: ${error.message}`));
        clear(tr.querySelector(".errors"), "—");
      }
    }
  };
  for (let i = 0; i < METRICS_CONCURRENCY; i += 1) worker();
}

function createForm(ctx, created, reload) {
  const error = errorBox();
  const input = h("input", {
    name: "name", required: true, pattern: "[a-z][a-z0-9\\-]{1,39}", autocomplete: "off",
    placeholder: "todo-app", "aria-describedby": "name-help",
  });
  const submit = h("button.primary", { type: "submit" }, "Create backpack");
  const form = h("form.card.create", {},
    h("label", {}, "New backpack name", input),
    h("p.muted.small", { id: "name-help" }, "Lowercase letters, digits and '-', 2 to 40 characters, starting with a letter."),
    error.el,
    h("div.actions", {}, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.show(null);
    submit.disabled = true;
    submit.textContent = "Creating…";
    try {
      const instance = await api.post("/instances", { name: input.value.trim() });
      input.value = "";
      showCreated(created, instance);
      await reload();
    } catch (failure) {
      error.show(failure);
    } finally {
      submit.disabled = false;
      submit.textContent = "Create backpack";
    }
  });
  return form;
}

function showCreated(created, instance) {
  const snippet = sdkSnippet(instance);
  const close = h("button.ghost", { type: "button", "aria-label": "Close" }, "×");
  close.addEventListener("click", () => clear(created));
  clear(created, h("section.card.created", { "aria-label": `${instance.name} is ready` },
    h("div.head", {}, h("h2", {}, `${instance.name} is ready`), close),
    h("p", {}, "API URL: ", h("a", { href: instance.urls.host, target: "_blank", rel: "noopener" }, instance.urls.host),
      " ", copyButton(instance.urls.host, "Copy URL")),
    h("p.muted", {}, `Path form (same origin as this console): ${instance.urls.api}`),
    h("pre.snippet", {}, h("code", {}, snippet)),
    h("div.actions", {}, copyButton(snippet, "Copy snippet"), h("a.button", { href: `#/b/${instance.name}` }, `Open ${instance.name}`))));
}
