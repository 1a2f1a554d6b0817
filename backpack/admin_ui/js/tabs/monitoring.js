// Charts of one backpack over the last hour or day, from GET …/metrics, refreshed every minute.

import { attempt, chart, clear, formatBytes, h } from "../ui.js";

const WINDOWS = [["1h", "1 hour"], ["24h", "24 hours"]];

export async function render(el, ctx) {
  let window = ctx.query.get("window") === "24h" ? "24h" : "1h";
  const buttons = WINDOWS.map(([id, label]) => {
    const button = h("button", { type: "button", "aria-pressed": String(id === window) }, label);
    button.addEventListener("click", () => {
      window = id;
      for (const b of buttons) b.setAttribute("aria-pressed", String(b === button));
      attempt(load);
    });
    return button;
  });
  const summary = h("div.stats", {});
  const charts = h("div.charts", {});
  el.append(
    h("div.head", {}, h("h2", {}, "Monitoring"), h("div.buttons", { role: "group", "aria-label": "Time window" }, buttons)),
    summary, charts);

  async function load() {
    const series = await ctx.api.get(`/instances/${ctx.name}/metrics?window=${window}`);
    const times = series.points.map((p) => p.time);
    const column = (key) => series.points.map((p) => p[key]);
    const t = series.totals;
    clear(summary,
      stat("Requests", t.requests), stat("Server errors", t.errors), stat("Client errors", t.client_errors),
      stat("p95 latency", t.p95_ms === null ? "—" : `${t.p95_ms} ms`),
      stat("Realtime connections", t.realtime_connections ?? "—"),
      stat("Records", t.records ?? "—"), stat("Users", t.users ?? "—"), stat("Storage", formatBytes(t.storage_bytes)));
    const storage = column("storage_bytes");
    const [divisor, unit] = byteScale(Math.max(0, ...storage.filter((v) => v !== null)));
    clear(charts,
      chart("Requests per minute", times, column("requests")),
      chart("Errors per minute (5xx)", times, column("errors")),
      chart("Client errors per minute (4xx)", times, column("client_errors")),
      chart("p95 latency (ms)", times, column("p95_ms")),
      chart("Realtime connections", times, column("realtime_connections")),
      chart(`Storage (${unit})`, times, storage.map((v) => (v === null ? null : v / divisor))));
  }

  await load();
  const timer = setInterval(() => attempt(load), 60_000);
  return () => clearInterval(timer);
}

function stat(label, value) {
  return h("div.stat.card", {}, h("div.muted", {}, label), h("strong", {}, String(value)));
}

function byteScale(max) {
  if (max >= 1024 ** 3) return [1024 ** 3, "GB"];
  if (max >= 1024 ** 2) return [1024 ** 2, "MB"];
  if (max >= 1024) return [1024, "KB"];
  return [1, "B"];
}
