// The schema field editor (docs/schema.md): one row per field with the options its type takes.

import { h } from "../ui.js";
import { parseJson } from "./filter.js";

export const TYPES = ["string", "email", "url", "number", "integer", "boolean", "date", "object",
  "json", "array", "relation", "file"];
const TEXT = ["minLength", "maxLength", "pattern", "enum", "unique"];
/** The options each type takes besides required and default. */
export const OPTIONS = {
  string: TEXT, email: TEXT, url: TEXT,
  number: ["min", "max", "enum", "unique"], integer: ["min", "max", "enum", "unique"],
  boolean: ["unique"], date: ["min", "max", "unique"], object: [], json: [],
  array: ["items", "minLength", "maxLength"], relation: ["collection", "unique"], file: ["unique"],
};
const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
const SYSTEM = new Set(["id", "created", "updated", "owner", "version", "expand"]);
const HINTS = {
  default: "JSON, e.g. false or \"todo\"", enum: "JSON list, e.g. [\"a\", \"b\"]",
  pattern: "RE2, e.g. ^[a-z]+$", minLength: "", maxLength: "", min: "", max: "",
};

let counter = 0;

/** One option input with its own error line; read() → value | undefined, or throws a message. */
function option(key, type, value, path) {
  const id = `opt-${++counter}`;
  const error = h("span.field-error", { id: `${id}-error`, hidden: true });
  let input;
  if (key === "unique" || key === "required") {
    input = h("input", { id, type: "checkbox", checked: Boolean(value) });
    return {
      key, path, error,
      el: h("label.check", { for: id }, input, ` ${key}`),
      read: () => input.checked || undefined,
    };
  }
  const numeric = ["minLength", "maxLength"].includes(key) || (["min", "max"].includes(key) && type !== "date");
  const shown = value === undefined || value === null ? "" : ["default", "enum"].includes(key) ? JSON.stringify(value) : String(value);
  input = h("input", {
    id, value: shown, type: numeric ? "number" : "text", step: numeric ? "any" : undefined,
    placeholder: HINTS[key] || (key === "collection" ? "collection name" : type === "date" ? "2026-01-01" : ""),
    "aria-describedby": `${id}-error`, autocomplete: "off",
  });
  const el = h("label.option", { for: id }, key, input, error);
  const fail = (message) => {
    error.hidden = false;
    error.textContent = message;
    input.setAttribute("aria-invalid", "true");
    throw `${path}: ${message}`;
  };
  return {
    key, path, error, el,
    read() {
      error.hidden = true;
      input.removeAttribute("aria-invalid");
      const text = input.value.trim();
      if (!text) return undefined;
      if (key === "default" || key === "enum") {
        const parsed = parseJson(text);
        if (parsed.error) fail(parsed.error);
        if (key === "enum" && (!Array.isArray(parsed.value) || !parsed.value.length)) fail("must be a non-empty JSON list");
        return parsed.value;
      }
      if (numeric) {
        const number = Number(text);
        if (!Number.isFinite(number)) fail("must be a number");
        if (key.endsWith("Length") && !(Number.isInteger(number) && number >= 0)) fail("must be a whole number ≥ 0");
        return number;
      }
      return text;
    },
  };
}

/**
 * The editor of one field (or of an array's `items` when `nested`):
 * {el, name(), read() → spec (throws a message), showError(path, message) → bool}.
 */
function fieldEditor(name, spec, { nested = false, onRemove, path }) {
  const el = h(nested ? "div.items-field" : "fieldset.field-row");
  const nameId = `fname-${++counter}`;
  const nameInput = h("input", { id: nameId, value: name || "", required: true, autocomplete: "off", "aria-label": "Field name" });
  const typeSelect = h("select", { "aria-label": nested ? "Item type" : "Field type" }, TYPES.map((t) => h("option", { value: t }, t)));
  typeSelect.value = spec.type || "string";
  let options = [];
  let items = null;
  const optionBox = h("div.options");
  const base = () => (nested ? path() : `${path}.${nameInput.value.trim()}`);

  function renderOptions(current) {
    const type = typeSelect.value;
    const keys = [...(nested ? [] : ["required", "default"]), ...OPTIONS[type].filter((k) => !(nested && k === "unique"))];
    options = keys.filter((k) => k !== "items").map((k) => option(k, type, current[k], `${base()}.${k}`));
    items = OPTIONS[type].includes("items")
      ? fieldEditor("", current.items || { type: "string" }, { nested: true, path: () => `${base()}.items` })
      : null;
    optionBox.replaceChildren(...options.map((o) => o.el),
      items ? h("div.items", {}, h("span.muted", {}, "items:"), items.el) : "");
  }

  typeSelect.addEventListener("change", () => {
    let current = {};
    try { current = read(); } catch { current = {}; } // keep what still applies to the new type
    renderOptions(current);
  });

  function read() {
    const out = { type: typeSelect.value };
    for (const o of options) {
      o.path = `${base()}.${o.key}`;
      const value = o.read();
      if (value !== undefined) out[o.key] = value;
    }
    if (items) out.items = items.read();
    return out;
  }

  renderOptions(spec);
  if (nested) {
    el.append(typeSelect, optionBox);
  } else {
    const remove = h("button.ghost", { type: "button", "aria-label": `Remove field ${name || ""}`.trim() }, "Remove");
    remove.addEventListener("click", () => onRemove());
    const legend = h("legend", {}, name || "new field");
    nameInput.addEventListener("input", () => { legend.textContent = nameInput.value.trim() || "new field"; });
    el.append(legend,
      h("div.field-head", {}, h("label", { for: nameId }, "Name", nameInput), h("label", {}, "Type", typeSelect), remove),
      optionBox);
  }
  return {
    el,
    name: () => nameInput.value.trim(),
    read() {
      if (!nested) {
        const n = nameInput.value.trim();
        if (!NAME.test(n)) throw `field name "${n}": letters, digits and _, not starting with a digit`;
        if (SYSTEM.has(n)) throw `field name "${n}" is a system field`;
      }
      return read();
    },
    showError(where, message) {
      if (!where.startsWith(base())) return false;
      if (items && where.startsWith(`${base()}.items`) && items.showError(where, message)) return true;
      const found = options.find((o) => where === `${base()}.${o.key}`) || options[0];
      if (!found) return false;
      found.error.hidden = false;
      found.error.textContent = `${where}: ${message}`;
      return true;
    },
  };
}

/**
 * The editor of a collection's schema: {el, read() → schema | null (throws a message),
 * showErrors(error)} — server errors keyed schema.fields.NAME.OPTION show at the option.
 */
export function schemaEditor(schema) {
  const rows = [];
  const list = h("div.fields");
  const useSchema = h("input", { type: "checkbox", checked: schema !== null });
  const strict = h("input", { type: "checkbox", checked: Boolean(schema && schema.strict) });
  const add = h("button", { type: "button" }, "Add field");
  const body = h("div", { hidden: schema === null }, list, h("div.actions.start", {}, add),
    h("label.check", {}, strict, " strict: reject fields the schema does not declare"));

  function addRow(name, spec) {
    const row = fieldEditor(name, spec, { path: "schema.fields", onRemove: () => {
      rows.splice(rows.indexOf(row), 1);
      row.el.remove();
    } });
    rows.push(row);
    list.append(row.el);
    return row;
  }

  for (const [name, spec] of Object.entries((schema && schema.fields) || {})) addRow(name, spec);
  add.addEventListener("click", () => {
    const row = addRow("", { type: "string" });
    row.el.querySelector("input").focus();
  });
  useSchema.addEventListener("change", () => { body.hidden = !useSchema.checked; });

  return {
    el: h("div.schema-editor", {},
      h("label.check", {}, useSchema, " Use a schema (without one, any JSON object is accepted)"), body),
    read() {
      if (!useSchema.checked) return null;
      const fields = {};
      for (const row of rows) {
        const name = row.name();
        const spec = row.read();
        if (name in fields) throw `field name "${name}" is used twice`;
        fields[name] = spec;
      }
      return { fields, strict: strict.checked };
    },
    showErrors(error) {
      const fields = (error && error.details && error.details.fields) || {};
      for (const [where, message] of Object.entries(fields)) rows.some((row) => row.showError(where, message));
    },
  };
}
