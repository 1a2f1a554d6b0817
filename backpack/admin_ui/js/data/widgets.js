// Editors shared by the data tabs: a JSON text area that validates as you type, a list of
// a 400's field errors, rules with presets, and cursor pagination.

import { attempt, h } from "../ui.js";
import { parseJson, ruleProblem } from "./filter.js";

let counter = 0;

/**
 * A labelled JSON text area. `check(value)` returns a problem ("" when fine); the problem
 * shows under the field as the admin types. {el, input, read() → {value} | {error}, setError}.
 */
export function jsonEditor(label, value, { check = () => "", rows = 4, name, allowEmpty = false, compact = false } = {}) {
  const text = (v) => JSON.stringify(v, null, compact ? undefined : 2);
  const id = `json-${++counter}`;
  const input = h("textarea", { id, name, rows, spellcheck: false, "aria-describedby": `${id}-error`, autocomplete: "off" });
  input.value = value === undefined ? "" : text(value);
  const message = h("p.field-error", { id: `${id}-error`, role: "alert", hidden: true });
  const el = h("div.json-field", {}, h("label", { for: id }, label), input, message);

  function setError(text) {
    message.hidden = !text;
    message.textContent = text || "";
    if (text) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }

  function read() {
    if (allowEmpty && !input.value.trim()) {
      setError("");
      return { value: undefined };
    }
    const parsed = parseJson(input.value);
    const problem = parsed.error || check(parsed.value);
    setError(problem);
    return problem ? { error: problem } : parsed;
  }

  input.addEventListener("input", read);
  return { el, input, read, setError, set(v) { input.value = text(v); setError(""); } };
}

/** The `details.fields` of a failed request as a list under a form (path: message). */
export function fieldErrors() {
  const el = h("ul.field-errors", { role: "alert", hidden: true });
  return {
    el,
    show(error) {
      const fields = error && error.details && (error.details.fields || null);
      const records = error && error.details && error.details.records;
      el.replaceChildren();
      el.hidden = !error;
      if (!error) return;
      el.append(h("li", {}, error.message || String(error)));
      for (const [path, text] of Object.entries(fields || {})) {
        el.append(h("li", {}, h("code", {}, path), ": ", String(text)));
      }
      for (const record of records || []) {
        const problems = Object.entries(record.fields || {}).map(([k, v]) => `${k}: ${v}`).join("; ");
        el.append(h("li", {}, "Record ", h("code", {}, record.id), `: ${problems}`));
      }
    },
  };
}

export const OPERATIONS = ["list", "read", "create", "update", "delete"];
const SIGNED_IN = { "@auth": { $ne: null } };
const OWNER = { owner: "@auth.id" };

/** The server's RULE_PRESETS (backpack/core/collections.py, docs/api.md). */
export const PRESETS = {
  private: { label: "Private (secret key only)", rules: { list: null, read: null, create: null, update: null, delete: null } },
  owner_only: { label: "Owner only", rules: { list: OWNER, read: OWNER, create: SIGNED_IN, update: OWNER, delete: OWNER } },
  signed_in_read_owner_write: { label: "Signed-in read, owner write", rules: { list: SIGNED_IN, read: SIGNED_IN, create: SIGNED_IN, update: OWNER, delete: OWNER } },
  public_read: { label: "Public read", rules: { list: true, read: true, create: SIGNED_IN, update: OWNER, delete: OWNER } },
  public: { label: "Public", rules: { list: true, read: true, create: true, update: true, delete: true } },
};

/** The name of the preset `rules` equal, or "" for custom rules. */
export function presetOf(rules) {
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  const found = Object.entries(PRESETS).find(([, p]) => OPERATIONS.every((op) => same(p.rules[op], rules[op])));
  return found ? found[0] : "";
}

/**
 * Rules with a preset picker and one validated filter editor per operation.
 * {el, read() → rules (throws a message when one is invalid; it shows at the field), showErrors(error)}.
 */
export function rulesEditor(rules) {
  const editors = Object.fromEntries(OPERATIONS.map((op) => [op, jsonEditor(`${op} rule`, rules[op], {
    name: `rule-${op}`,
    rows: 2,
    compact: true,
    check: (value) => ruleProblem(value, { body: op === "create" || op === "update" }),
  })]));
  const select = h("select", { name: "preset" },
    h("option", { value: "" }, "Custom"),
    Object.entries(PRESETS).map(([key, p]) => h("option", { value: key }, p.label)));
  select.value = presetOf(rules);
  select.addEventListener("change", () => {
    const preset = PRESETS[select.value];
    if (!preset) return;
    for (const op of OPERATIONS) editors[op].set(preset.rules[op]);
  });
  for (const op of OPERATIONS) {
    editors[op].input.addEventListener("input", () => {
      const values = {};
      for (const o of OPERATIONS) {
        const parsed = parseJson(editors[o].input.value);
        if (parsed.error) { select.value = ""; return; }
        values[o] = parsed.value;
      }
      select.value = presetOf(values);
    });
  }
  const el = h("div.rules-editor", {},
    h("label", {}, "Preset", select),
    h("p.muted", {}, "Each rule is null (secret key only), true (everyone) or a filter; ",
      h("code", {}, '{"@auth": {"$ne": null}}'), " means signed in, ", h("code", {}, '{"owner": "@auth.id"}'), " the owner."),
    h("div.rules-grid", {}, OPERATIONS.map((op) => editors[op].el)));
  return {
    el,
    read() {
      const out = {};
      let ok = true;
      for (const op of OPERATIONS) {
        const parsed = editors[op].read();
        if (parsed.error) ok = false;
        else out[op] = parsed.value;
      }
      if (!ok) throw "fix the rules marked above";
      return out;
    },
    showErrors(error) {
      const fields = (error && error.details && error.details.fields) || {};
      for (const op of OPERATIONS) {
        const text = fields[`rules.${op}`];
        if (text) editors[op].setError(`rules.${op}: ${text}`);
      }
    },
  };
}

/**
 * Cursor pagination: keeps the cursors of the pages seen so "Previous" goes back without
 * loading anything but that page. load(after) must resolve with the API's page.
 */
export function pager(load, onPage, label = "Pages") {
  const cursors = [undefined];
  let index = 0;
  const prev = h("button", { type: "button" }, "← Previous");
  const next = h("button", { type: "button" }, "Next →");
  const where = h("span.muted", { "aria-live": "polite" }, "");
  const el = h("nav.pager", { "aria-label": label }, prev, where, next);
  let nextCursor = null;

  async function go(to) {
    const page = await load(cursors[to]);
    index = to;
    nextCursor = page.next;
    if (page.next) cursors[to + 1] = page.next;
    cursors.length = nextCursor ? to + 2 : to + 1;
    prev.disabled = index === 0;
    next.disabled = !nextCursor;
    where.textContent = `Page ${index + 1}`;
    onPage(page);
    return page;
  }

  prev.addEventListener("click", () => attempt(() => go(index - 1)));
  next.addEventListener("click", () => attempt(() => go(index + 1)));
  return {
    el,
    first: () => go(0),
    reload: () => go(index),
    get page() { return index; },
  };
}

const LIVE_TEXT = { connecting: "Connecting for live updates…", open: "Live", closed: "Live updates disconnected: reconnecting…" };

/** The state of `client`'s realtime connection, as text: {el, stop()}. */
export function liveStatus(client) {
  const el = h("span.live.muted", { role: "status" }, client.realtime.connected ? LIVE_TEXT.open : LIVE_TEXT.connecting);
  let failed = false;
  const stop = client.realtime.onStatus((status, detail) => {
    if (status === "open") failed = false;
    if (failed && status !== "error") return; // keep the reason shown until it works again
    failed = status === "error";
    el.textContent = failed
      ? `Live updates failed: ${(detail && detail.message) || "unknown error"}`
      : LIVE_TEXT[status] || status;
    el.classList.toggle("field-error", failed);
  });
  return { el, stop };
}
