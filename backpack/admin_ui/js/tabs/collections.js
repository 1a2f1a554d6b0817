// Collections: list, create, delete, and edit a collection's schema, indexes and rules.

import { attempt, confirmByName, dialog, formatTime, h, table, toast } from "../ui.js";
import { schemaEditor } from "../data/schema.js";
import { PRESETS, fieldErrors, presetOf, rulesEditor } from "../data/widgets.js";

const NAME = "^[A-Za-z][A-Za-z0-9_]{0,63}$";

function indexesEditor(indexes) {
  const list = h("div.index-list");
  const rows = [];
  function addRow(index) {
    const fields = h("input", { value: index.fields.join(", "), "aria-label": "Index fields", placeholder: "done, -created", autocomplete: "off" });
    const unique = h("input", { type: "checkbox", checked: Boolean(index.unique) });
    const remove = h("button.ghost", { type: "button" }, "Remove");
    const row = { fields, unique, el: h("div.index-row", {}, fields, h("label.check", {}, unique, " unique"), remove) };
    remove.addEventListener("click", () => { rows.splice(rows.indexOf(row), 1); row.el.remove(); });
    rows.push(row);
    list.append(row.el);
    return row;
  }
  indexes.forEach(addRow);
  const add = h("button", { type: "button" }, "Add index");
  add.addEventListener("click", () => addRow({ fields: [], unique: false }).fields.focus());
  return {
    el: h("div", {}, h("p.muted", {}, "Comma-separated dotted paths; a leading - sorts descending. ",
      "Every collection also has an index on owner and one per unique field."), list, h("div.actions.start", {}, add)),
    read: () => rows.map((r) => ({
      fields: r.fields.value.split(",").map((f) => f.trim()).filter(Boolean),
      unique: r.unique.checked,
    })),
  };
}

/** A titled section with a Save button that PATCHes what `read()` returns. */
function section(title, editor, save) {
  const errors = fieldErrors();
  const button = h("button.primary", { type: "submit" }, `Save ${title.toLowerCase()}`);
  const form = h("form.card.section", { "aria-label": title }, h("h3", {}, title), editor.el, errors.el,
    h("div.actions", {}, button));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.show(null);
    let value;
    try {
      value = editor.read();
    } catch (problem) {
      errors.show({ message: `Not saved: ${problem}` });
      return;
    }
    button.disabled = true;
    try {
      await save(value);
      toast(`${title} saved.`, "success");
    } catch (error) {
      errors.show(error);
      if (editor.showErrors) editor.showErrors(error);
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

export async function render(el, ctx) {
  const client = await ctx.client();
  const listBox = h("div");
  const editorBox = h("div");
  const create = h("button.primary", { type: "button" }, "New collection");
  el.append(h("div.tab-head", {}, h("h2", {}, "Collections"), create), listBox, editorBox);

  const path = (name) => `/api/collections/${encodeURIComponent(name)}`;

  async function load() {
    const { items } = await client.request("GET", "/api/collections");
    listBox.replaceChildren(table([
      { label: "Name", cell: (c) => h("button.link", { type: "button", onclick: () => attempt(() => edit(c.name)) }, c.name) },
      { label: "Fields", cell: (c) => (c.schema ? Object.keys(c.schema.fields || {}).length : "any") },
      { label: "Rules", cell: (c) => (PRESETS[presetOf(c.rules)] || { label: "Custom" }).label },
      { label: "Updated", cell: (c) => formatTime(c.updated) },
      { label: "Actions", cell: (c) => h("div.row-actions", {},
        h("a.button", { href: `#/b/${ctx.name}/data?collection=${encodeURIComponent(c.name)}` }, "Records"),
        h("button", { type: "button", onclick: () => attempt(() => edit(c.name)) }, "Edit"),
        h("button.danger", { type: "button", onclick: () => attempt(() => remove(c.name)) }, "Delete")) },
    ], items, { empty: "No collections yet: create one, or write a record with the secret key." }));
    listBox.querySelector("table")?.classList.add("stack");
    return items;
  }

  async function edit(name) {
    const collection = await client.request("GET", path(name));
    const schema = schemaEditor(collection.schema);
    const indexes = indexesEditor(collection.indexes || []);
    const rules = rulesEditor(collection.rules);
    const patch = async (body) => {
      await client.request("PATCH", path(name), { body });
      await load();
    };
    editorBox.replaceChildren(h("section.collection-editor", { "aria-label": `Collection ${name}` },
      h("div.tab-head", {}, h("h2", {}, `Collection ${name}`),
        h("a.button", { href: `#/b/${ctx.name}/data?collection=${encodeURIComponent(name)}` }, "Browse records")),
      section("Schema", schema, (value) => patch({ schema: value })),
      section("Indexes", indexes, (value) => patch({ indexes: value })),
      section("Rules", rules, (value) => patch({ rules: value }))));
    editorBox.querySelector("h2").scrollIntoView({ block: "nearest" });
  }

  async function remove(name) {
    if (!(await confirmByName("Delete collection", name))) {
      toast("Nothing was deleted: the name did not match.");
      return;
    }
    await client.request("DELETE", path(name));
    toast(`Collection ${name} and its records were deleted.`, "success");
    if (editorBox.querySelector(`section[aria-label="Collection ${name}"]`)) editorBox.replaceChildren();
    await load();
  }

  create.addEventListener("click", () => attempt(async () => {
    const preset = h("select", { name: "preset" },
      Object.entries(PRESETS).map(([key, p]) => h("option", { value: key, selected: key === "owner_only" }, p.label)));
    const values = await dialog("New collection", [
      h("label", {}, "Name", h("input", { name: "name", required: true, pattern: NAME, autocomplete: "off",
        title: "Letters, digits and _, starting with a letter" })),
      h("label", {}, "Rules", preset),
    ], { submit: "Create" });
    if (!values) return;
    await client.request("POST", "/api/collections", { body: { name: values.name, rules: PRESETS[values.preset].rules } });
    toast(`Collection ${values.name} created.`, "success");
    await load();
    await edit(values.name);
  }));

  await load();
  const wanted = ctx.query.get("collection");
  if (wanted) await edit(wanted);
}
