// A live tail of one backpack's log through the WebSocket …/logs/stream, with filters by
// status (server-side, min_status) and path (contains, in the browser), and a pause.

import { logStreamUrl } from "../api.js";
import { clear, formatTime, h } from "../ui.js";

const KEEP = 500;

export async function render(el, ctx) {
  let entries = [];
  let held = [];
  let paused = false;
  let socket = null;
  let retry = null;
  let closed = false;
  let retries = 0;

  const minStatus = h("select", { name: "min_status" },
    h("option", { value: "" }, "Any"), h("option", { value: "400" }, "400 and above"),
    h("option", { value: "500" }, "500 and above"));
  const pathFilter = h("input", { name: "path", type: "search", placeholder: "/api/collections", autocomplete: "off" });
  const pause = h("button", { type: "button", "aria-pressed": "false" }, "Pause");
  const state = h("p.muted.live", { role: "status" }, "Connecting…");
  const body = h("tbody", {});
  el.append(
    h("h2", {}, "Logs"),
    h("form.filters", { role: "search" },
      h("label", {}, "Status", minStatus),
      h("label", {}, "Path contains", pathFilter),
      pause),
    state,
    h("div.table-wrap", {}, h("table.stack.logs", {},
      h("thead", {}, h("tr", {}, ["Time", "Method", "Path", "Status", "Duration", "User / event"].map((c) => h("th", { scope: "col" }, c)))),
      body)));
  el.querySelector("form").addEventListener("submit", (event) => event.preventDefault());

  const visible = (entry) => {
    const needle = pathFilter.value.trim();
    return !needle || (entry.path || "").includes(needle);
  };

  function draw() {
    clear(body, entries.filter(visible).slice(-KEEP).reverse().map(row));
  }

  function add(list) {
    entries = entries.concat(list).slice(-KEEP);
    draw();
  }

  async function start() {
    stop();
    entries = [];
    held = [];
    const query = new URLSearchParams({ limit: "100" });
    if (minStatus.value) query.set("min_status", minStatus.value);
    const { items } = await ctx.api.get(`/instances/${ctx.name}/logs?${query}`);
    add(items);
    connect();
  }

  function connect() {
    const query = new URLSearchParams();
    if (minStatus.value) query.set("min_status", minStatus.value);
    const last = entries.at(-1) || held.at(-1);
    if (last) query.set("after", last.id);
    const ws = new WebSocket(logStreamUrl(ctx.name, query));
    socket = ws;
    ws.addEventListener("open", () => {
      retries = 0;
      state.textContent = paused ? "Paused: new entries are held." : "Live: new entries appear at the top.";
    });
    ws.addEventListener("message", (event) => {
      const entry = JSON.parse(event.data);
      if (paused) {
        held.push(entry);
        held = held.slice(-KEEP);
        state.textContent = `Paused: ${held.length} new entries held.`;
      } else {
        add([entry]);
      }
    });
    ws.addEventListener("close", (event) => {
      if (socket !== ws || closed) return;
      socket = null;
      if (event.code >= 4000) {
        state.textContent = `The live log stopped: ${event.reason || `code ${event.code}`}.`;
        state.className = "field-error live";
        return;
      }
      retries += 1;
      const delay = Math.min(10_000, 500 * 2 ** retries);
      state.textContent = `Disconnected; reconnecting in ${Math.round(delay / 1000)} s…`;
      retry = setTimeout(connect, delay);
    });
  }

  function stop() {
    clearTimeout(retry);
    if (socket) {
      const ws = socket;
      socket = null;
      ws.close();
    }
  }

  minStatus.addEventListener("change", () => start().catch(showFailure));
  pathFilter.addEventListener("input", draw);
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume" : "Pause";
    if (!paused) {
      add(held);
      held = [];
      state.textContent = "Live: new entries appear at the top.";
    } else {
      state.textContent = "Paused: new entries are held.";
    }
  });

  function showFailure(error) {
    state.textContent = `The log could not be read: ${error.message}`;
    state.className = "field-error live";
  }

  await start();
  return () => {
    closed = true;
    stop();
  };
}

function row(entry) {
  const cells = entry.type === "request"
    ? [entry.method, entry.path, String(entry.status), `${entry.duration_ms} ms`, entry.user_id || "—"]
    : ["event", "", "", "", `${entry.kind}: ${entry.message}`];
  const labels = ["Method", "Path", "Status", "Duration", "User / event"];
  const status = entry.status >= 500 ? "bad" : entry.status >= 400 ? "warn" : "";
  return h("tr", { class: status },
    h("td", { dataset: { label: "Time" } }, formatTime(entry.time)),
    cells.map((text, i) => h("td", { dataset: { label: labels[i] } }, text)));
}
