// Data: a record browser for one collection — filter, sort, cursor pages, inline JSON
// editing, create, delete, and live updates through a realtime subscription.

import { attempt, dialog, formatTime, h, showError, toast } from "../ui.js";
import { filterProblem } from "../data/filter.js";
import { fieldErrors, jsonEditor, liveStatus, pager } from "../data/widgets.js";

const PAGE_SIZE = 50;
const SYSTEM = ["id", "created", "updated", "owner", "version", "expand"];

function short(value) {
  if (value === undefined) return "";
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > 80 ? `${text.slice(0, 79)}…` : text;
}

function documentOf(record) {
  return Object.fromEntries(Object.entries(record).filter(([k]) => !SYSTEM.includes(k)));
}

function template(schema) {
  const out = {};
  for (const [name, spec] of Object.entries((schema && schema.fields) || {})) {
    if (spec.default !== undefined) out[name] = spec.default;
    else if (spec.required) out[name] = { string: "", email: "", url: "", number: 0, integer: 0, boolean: false, array: [], object: {} }[spec.type] ?? null;
  }
  return out;
}

export async function render(el, ctx) {
  const client = await ctx.client();
  const { items: collections } = await client.request("GET", "/api/collections");
  const head = h("div.tab-head", {}, h("h2", {}, "Records"));
  el.append(head);
  if (!collections.length) {
    el.append(h("p.muted", {}, "No collections yet. ", h("a", { href: `#/b/${ctx.name}/collections` }, "Create one"), "."));
    return undefined;
  }
  const names = collections.map((c) => c.name);
  let current = collections.find((c) => c.name === ctx.query.get("collection")) || collections[0];
  let filter = {};
  let sort = "-created";
  let records = [];
  let unsubscribe = null;
  let reloadTimer = null;

  const picker = h("select", { name: "collection" }, names.map((n) => h("option", { value: n }, n)));
  picker.value = current.name;
  const filterEditor = jsonEditor("Filter (JSON, see docs/filters.md)", undefined, {
    name: "filter", rows: 2, allowEmpty: true, check: (value) => filterProblem(value),
  });
  filterEditor.input.placeholder = '{"done": false, "score": {"$gte": 10}}';
  const apply = h("button.primary", { type: "submit" }, "Apply filter");
  const filterForm = h("form.filter-form", { "aria-label": "Filter records" }, filterEditor.el, h("div.actions.start", {}, apply));
  const create = h("button.primary", { type: "button" }, "New record");
  const total = h("span.muted", { "aria-live": "polite" }, "");
  const sortSelect = h("select", { name: "sort" });
  const live = liveStatus(client);
  const editorSlot = h("div");
  const tableBox = h("div.table-wrap");
  const pages = pager(loadPage, showPage, "Record pages");
  head.append(h("label.inline", {}, "Collection ", picker), create);
  el.append(filterForm, h("div.list-meta", {}, total, live.el, h("label.inline", {}, "Sort ", sortSelect)), editorSlot, tableBox, pages.el);

  function columns() {
    const fields = current.schema ? Object.keys(current.schema.fields || {}) : [];
    if (!fields.length) {
      const seen = new Set();
      for (const r of records) for (const k of Object.keys(r)) if (!SYSTEM.includes(k)) seen.add(k);
      fields.push(...[...seen].slice(0, 8));
    }
    return ["id", ...fields, "created"];
  }

  async function loadPage(after) {
    performance.mark("records-page-start");
    const page = await client.collection(current.name).list({
      filter: Object.keys(filter).length ? filter : undefined, sort, limit: PAGE_SIZE, after, count: after === undefined,
    });
    if (page.total !== undefined) total.textContent = `${page.total} record${page.total === 1 ? "" : "s"}`;
    return page;
  }

  function showPage(page) {
    records = page.items;
    drawTable();
    drawSortChoices();
    performance.measure("records-page", "records-page-start");
  }

  /** The same sort as the column headers, for keyboards and narrow screens (no header row). */
  function drawSortChoices() {
    sortSelect.replaceChildren(...columns().flatMap((c) => [
      h("option", { value: c }, `${c} ↑`), h("option", { value: `-${c}` }, `${c} ↓`)]));
    sortSelect.value = sort;
  }

  function sortButton(column) {
    const key = column === "id" ? "id" : column;
    const state = sort === key ? "ascending" : sort === `-${key}` ? "descending" : "none";
    const arrow = { ascending: " ▲", descending: " ▼", none: "" }[state];
    const button = h("button.sort", { type: "button", title: `Sort by ${column}` }, column, arrow);
    button.addEventListener("click", () => attempt(async () => {
      sort = state === "ascending" ? `-${key}` : key;
      await pages.first();
      tableBox.querySelector(`th[data-column="${column}"] button`)?.focus();
    }));
    return h("th", { scope: "col", "aria-sort": state, dataset: { column } }, button);
  }

  function row(record, cols) {
    const edit = h("button", { type: "button" }, "Edit");
    const remove = h("button.danger", { type: "button" }, "Delete");
    const tr = h("tr", { dataset: { id: record.id } },
      cols.map((c) => h("td", { dataset: { label: c } }, c === "created" ? formatTime(record.created) : short(record[c]))),
      h("td", { dataset: { label: "Actions" } }, h("div.row-actions", {}, edit, remove)));
    edit.addEventListener("click", () => openEditor(record, tr));
    remove.addEventListener("click", () => attempt(() => deleteRecord(record)));
    return tr;
  }

  function drawTable() {
    const cols = columns();
    if (!records.length) {
      tableBox.replaceChildren(h("p.muted", {}, Object.keys(filter).length ? "No record matches the filter." : "No records yet."));
      return;
    }
    tableBox.replaceChildren(h("table.stack.records", {},
      h("thead", {}, h("tr", {}, cols.map(sortButton), h("th", { scope: "col" }, "Actions"))),
      h("tbody", {}, records.map((r) => row(r, cols)))));
  }

  /** The inline JSON editor for `record` (or a new record when null), below its row. */
  function openEditor(record, tr) {
    for (const open of el.querySelectorAll(".record-editor")) open.closest("tr.editor-row, div.editor-box").remove();
    const editor = jsonEditor(record ? `Record ${record.id}` : "New record", record ? documentOf(record) : template(current.schema), {
      name: "record", rows: 8,
      check: (value) => (value && typeof value === "object" && !Array.isArray(value) ? "" : "a record must be a JSON object"),
    });
    const errors = fieldErrors();
    const save = h("button.primary", { type: "submit" }, record ? "Save" : "Create");
    const cancel = h("button", { type: "button" }, "Cancel");
    const form = h("form.record-editor", { "aria-label": record ? `Edit record ${record.id}` : "New record" },
      editor.el, errors.el, h("p.muted", {}, "System fields (id, created, updated, owner, version) are set by the server."),
      h("div.actions", {}, cancel, save));
    const holder = tr
      ? h("tr.editor-row", {}, h("td", { colspan: tr.children.length }, form))
      : h("div.editor-box.card", {}, form);
    if (tr) tr.after(holder);
    else editorSlot.replaceChildren(holder);
    editor.input.focus();
    cancel.addEventListener("click", () => holder.remove());
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      errors.show(null);
      const parsed = editor.read();
      if (parsed.error) return;
      save.disabled = true;
      try {
        const collection = client.collection(current.name);
        const saved = record
          ? await collection.replace(record.id, parsed.value, { ifMatch: record.version })
          : await collection.create(parsed.value);
        holder.remove();
        toast(record ? `Record ${saved.id} saved.` : `Record ${saved.id} created.`, "success");
        if (record) replaceRecord(saved);
        else await pages.reload();
      } catch (error) {
        const fields = error.details && error.details.fields;
        editor.setError(fields ? Object.entries(fields).map(([k, v]) => `${k}: ${v}`).join("; ") : error.message);
        errors.show(error);
      } finally {
        save.disabled = false;
      }
    });
  }

  function replaceRecord(record) {
    const index = records.findIndex((r) => r.id === record.id);
    if (index < 0) return;
    records[index] = record;
    const old = tableBox.querySelector(`tr[data-id="${CSS.escape(record.id)}"]`);
    if (old) old.replaceWith(row(record, columns()));
  }

  async function deleteRecord(record) {
    const ok = await dialog("Delete record", h("p", {}, "Delete record ", h("code", {}, record.id), "? This cannot be undone."),
      { submit: "Delete", danger: true });
    if (!ok) return;
    await client.collection(current.name).delete(record.id);
    removeRecord(record.id);
    toast(`Record ${record.id} deleted.`, "success");
  }

  function removeRecord(id) {
    records = records.filter((r) => r.id !== id);
    tableBox.querySelector(`tr[data-id="${CSS.escape(id)}"]`)?.remove();
    if (!records.length) scheduleReload(); // the page emptied: show what follows, or that none are left
  }

  function onEvent(event) {
    if (event.action === "error") {
      showError(event.error);
      return;
    }
    if (event.action === "update" && !el.querySelector(".record-editor")) replaceRecord(event.record);
    else if (event.action === "delete") removeRecord(event.record.id);
    else if (event.action === "create" || event.action === "resync") {
      if (pages.page !== 0) {
        toast("New records arrived: go back to the first page to see them.");
        return;
      }
      scheduleReload();
    }
  }

  /** Reload the page soon; while the admin edits a record, wait: a reload would close the editor. */
  function scheduleReload() {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(() => {
      if (el.querySelector(".record-editor")) scheduleReload();
      else attempt(() => pages.reload());
    }, 200);
  }

  function subscribe() {
    if (unsubscribe) unsubscribe();
    unsubscribe = client.collection(current.name).subscribe(Object.keys(filter).length ? filter : undefined, onEvent);
    unsubscribe.ready.catch(showError);
  }

  filterForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const parsed = filterEditor.read();
    if (parsed.error) return;
    const previous = filter;
    filter = parsed.value || {};
    try {
      await pages.first();
      subscribe();
    } catch (error) {
      filter = previous;
      filterEditor.setError(error.message);
      if (error.status !== 400) showError(error);
    }
  });

  picker.addEventListener("change", () => attempt(async () => {
    current = collections.find((c) => c.name === picker.value);
    filter = {};
    filterEditor.input.value = "";
    filterEditor.setError("");
    sort = "-created";
    editorSlot.replaceChildren();
    await pages.first();
    subscribe();
  }));
  create.addEventListener("click", () => openEditor(null, null));
  sortSelect.addEventListener("change", () => attempt(async () => {
    sort = sortSelect.value;
    await pages.first();
  }));

  await pages.first();
  subscribe();
  return () => {
    clearTimeout(reloadTimer);
    live.stop();
    if (unsubscribe) unsubscribe();
  };
}
