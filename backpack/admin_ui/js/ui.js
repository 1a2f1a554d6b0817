// Small DOM helpers shared by every view: elements, messages, dialogs, tables, charts.

/** h("button.primary", {onclick}, "Save") → an element; children may be strings, nodes, arrays. */
export function h(tag, attrs = {}, ...children) {
  const [name, ...classes] = tag.split(".");
  const el = document.createElement(name || "div");
  if (classes.length) el.className = classes.join(" ");
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = [el.className, value].filter(Boolean).join(" ");
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A message that stays until dismissed (errors) or fades (success). */
export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const close = h("button.ghost", { type: "button", "aria-label": "Dismiss" }, "×");
  const item = h(`div.toast.${kind}`, { role: kind === "error" ? "alert" : "status" }, h("span", {}, message), close);
  close.addEventListener("click", () => item.remove());
  box.append(item);
  if (kind !== "error") setTimeout(() => item.remove(), 4000);
  return item;
}

/** Run `work`; show any error as a readable message; return its result or undefined. */
export async function attempt(work, { success } = {}) {
  try {
    const result = await work();
    if (success) toast(success, "success");
    return result;
  } catch (error) {
    showError(error);
    return undefined;
  }
}

export function showError(error) {
  if (error && error.status === 401) return; // the login page takes over
  const fields = error && error.details && error.details.fields;
  const extra = fields && typeof fields === "object"
    ? Object.entries(fields).map(([k, v]) => `${k}: ${v}`).join("; ")
    : "";
  toast(extra ? `${error.message} ${extra}` : (error && error.message) || String(error), "error");
}

/** A modal dialog; resolves with the form's values or null when cancelled. */
export function dialog(title, body, { submit = "OK", danger = false } = {}) {
  return new Promise((resolve) => {
    const form = h("form", { method: "dialog" },
      h("h2", {}, title),
      body,
      h("div.actions",
        {},
        h("button.ghost", { type: "button", value: "cancel", onclick: () => { el.close(); resolve(null); } }, "Cancel"),
        h(`button.${danger ? "danger" : "primary"}`, { type: "submit" }, submit)));
    const el = h("dialog", { "aria-label": title }, form);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const values = Object.fromEntries(new FormData(form).entries());
      el.close();
      resolve(values);
    });
    el.addEventListener("close", () => { el.remove(); resolve(null); });
    document.body.append(el);
    el.showModal();
    const first = el.querySelector("input, textarea, select");
    if (first) first.focus();
  });
}

/** Ask the admin to type `name` before a destructive action. */
export async function confirmByName(action, name) {
  const input = h("input", { name: "confirm", autocomplete: "off", required: true, "aria-label": `Type ${name} to confirm` });
  const values = await dialog(action, [h("p", {}, `Type `, h("strong", {}, name), ` to confirm.`), input], { submit: action, danger: true });
  return values && values.confirm === name;
}

export function table(columns, rows, { empty = "Nothing yet." } = {}) {
  if (!rows.length) return h("p.muted", {}, empty);
  return h("div.table-wrap", {},
    h("table", {},
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c.label)))),
      h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((c) => h("td", { dataset: { label: c.label } }, c.cell(row))))))));
}

export function formatBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i && n < 10 ? 1 : 0)} ${units[i]}`;
}

export function formatTime(text) {
  if (!text) return "—";
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? text : date.toLocaleString();
}

/** A status badge for a backpack: running, stopped or failed. */
export function statusBadge(status) {
  return h(`span.status.${status}`, {}, status);
}

/** A button that copies `text` to the clipboard and says so. */
export function copyButton(text, label = "Copy") {
  const button = h("button", { type: "button" }, label);
  button.addEventListener("click", () => attempt(async () => {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  }));
  return button;
}

/** A labelled progress bar: {el, set(fraction | null), done()}; null means indeterminate. */
export function progress(label) {
  const bar = h("progress", { max: 1, "aria-label": label });
  const text = h("span.muted", {}, "");
  const el = h("div.progress", {}, h("span", {}, label), bar, text);
  return {
    el,
    set(fraction) {
      if (fraction === null || fraction === undefined) {
        bar.removeAttribute("value");
        text.textContent = "";
      } else {
        bar.value = fraction;
        text.textContent = `${Math.round(fraction * 100)} %`;
      }
    },
    done() { el.remove(); },
  };
}

/** An inline error next to a form: show(error) or show(null) to hide. */
export function errorBox() {
  const el = h("p.field-error", { role: "alert", hidden: true });
  return {
    el,
    show(error) {
      el.hidden = !error;
      if (!error) return;
      const fields = error.details && error.details.fields;
      const extra = fields && typeof fields === "object"
        ? Object.entries(fields).map(([k, v]) => `${k}: ${v}`).join("; ")
        : "";
      el.textContent = extra ? `${error.message} ${extra}` : error.message || String(error);
    },
  };
}

/** A labelled input: field("Email", {name: "email", type: "email"}). */
export function field(label, attrs = {}, tag = "input") {
  return h("label", {}, label, h(tag, attrs));
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

/** A tiny line chart of `values` (numbers or null), width × height, as SVG. */
export function sparkline(values, { width = 120, height = 28, label = "" } = {}) {
  const el = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "spark" });
  const points = values.map((v, i) => [i, v]).filter(([, v]) => v !== null && v !== undefined);
  if (points.length < 2) return el;
  const max = Math.max(1, ...points.map(([, v]) => v));
  const step = width / Math.max(1, values.length - 1);
  const d = points.map(([i, v], k) => `${k ? "L" : "M"}${(i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`).join("");
  el.append(svg("path", { d, fill: "none", stroke: "currentColor", "stroke-width": "1.5" }));
  return el;
}

/** A labelled line chart with axes for the monitoring tab. */
export function chart(title, times, values, { unit = "", width = 560, height = 160 } = {}) {
  const pad = { l: 44, r: 8, t: 8, b: 22 };
  const el = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title, class: "chart" });
  const numbers = values.filter((v) => v !== null && v !== undefined);
  const max = Math.max(1, ...numbers);
  const x = (i) => pad.l + (i * (width - pad.l - pad.r)) / Math.max(1, values.length - 1);
  const y = (v) => height - pad.b - (v / max) * (height - pad.t - pad.b);
  el.append(svg("line", { x1: pad.l, y1: y(0), x2: width - pad.r, y2: y(0), class: "axis" }));
  for (const tick of [0, max / 2, max]) {
    const label = svg("text", { x: pad.l - 6, y: y(tick) + 4, "text-anchor": "end", class: "tick" });
    label.textContent = `${Number.isInteger(tick) ? tick : tick.toFixed(1)}${unit}`;
    el.append(label);
  }
  if (times.length) {
    for (const i of [0, times.length - 1]) {
      const label = svg("text", { x: x(i), y: height - 6, "text-anchor": i ? "end" : "start", class: "tick" });
      label.textContent = new Date(times[i]).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      el.append(label);
    }
  }
  let d = "";
  values.forEach((v, i) => {
    if (v === null || v === undefined) return;
    d += `${d ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
  });
  if (d) el.append(svg("path", { d, class: "line" }));
  return h("figure.chart", {}, h("figcaption", {}, title), el);
}
