// Files: buckets (rules and limits), upload with progress, image previews, download, delete.

import { attempt, dialog, formatBytes, formatTime, h, progress, showError, table, toast } from "../ui.js";
import { PRESETS, fieldErrors, liveStatus, pager, presetOf, rulesEditor } from "../data/widgets.js";

const PAGE_SIZE = 25;
const PREVIEWABLE = /^image\/(png|jpeg|gif|webp)$/;

export async function render(el, ctx) {
  const client = await ctx.client();
  let buckets = [];
  let bucket = "default";
  let objectUrls = [];
  let reloadTimer = null;
  let unsubscribe = null;

  const newBucket = h("button", { type: "button" }, "New bucket");
  const bucketsBox = h("div");
  const settingsBox = h("div");
  const chooser = h("input", { type: "file", multiple: true, name: "file", "aria-label": "Files to upload" });
  const isPublic = h("input", { type: "checkbox", name: "public" });
  const uploadTitle = h("h3", {}, "Upload");
  const uploadForm = h("form.card.upload", { "aria-label": "Upload files" }, uploadTitle, chooser,
    h("label.check", {}, isPublic, " Public (readable by anyone who knows the id)"),
    h("div.actions", {}, h("button.primary", { type: "submit" }, "Upload")));
  const uploads = h("div.uploads", { "aria-live": "polite" });
  const filesTitle = h("h3", {}, "Files");
  const live = liveStatus(client);
  const filesBox = h("div");
  const pages = pager(loadFiles, (page) => drawFiles(page.items), "File pages");
  el.append(h("div.tab-head", {}, h("h2", {}, "Buckets"), newBucket), bucketsBox, settingsBox,
    uploadForm, uploads, filesTitle, live.el, filesBox, pages.el);

  const bucketPath = (name) => `/api/buckets/${encodeURIComponent(name)}`;

  async function loadBuckets() {
    ({ items: buckets } = await client.request("GET", "/api/buckets"));
    bucketsBox.replaceChildren(table([
      { label: "Bucket", cell: (b) => h("button.link", { type: "button", "aria-pressed": String(b.name === bucket), onclick: () => attempt(() => select(b.name)) }, b.name) },
      { label: "Max size", cell: (b) => (b.max_size ? formatBytes(b.max_size) : "backpack limit") },
      { label: "Types", cell: (b) => (b.allowed_types ? b.allowed_types.join(", ") : "any") },
      { label: "Rules", cell: (b) => (PRESETS[presetOf(b.rules)] || { label: "Custom" }).label },
    ], buckets));
    bucketsBox.querySelector("table")?.classList.add("stack");
  }

  function settingsForm(settings) {
    const maxSize = h("input", { type: "number", min: 1, step: 1, name: "max_size", value: settings.max_size ?? "", placeholder: "no bucket limit" });
    const types = h("input", { name: "allowed_types", value: (settings.allowed_types || []).join(", "), placeholder: "any type, or e.g. image/*, application/pdf", autocomplete: "off" });
    const rules = rulesEditor(settings.rules);
    const errors = fieldErrors();
    const form = h("form.card.section", { "aria-label": `Bucket ${settings.name} settings` },
      h("h3", {}, `Bucket ${settings.name}`),
      h("label", {}, "Max size in bytes", maxSize),
      h("label", {}, "Allowed types (comma-separated MIME patterns)", types),
      rules.el, errors.el, h("div.actions", {}, h("button.primary", { type: "submit" }, "Save bucket")));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      errors.show(null);
      let body;
      try {
        const list = types.value.split(",").map((t) => t.trim()).filter(Boolean);
        body = { rules: rules.read(), max_size: maxSize.value ? Number(maxSize.value) : null, allowed_types: list.length ? list : null };
      } catch (problem) {
        errors.show({ message: `Not saved: ${problem}` });
        return;
      }
      try {
        await client.request("PUT", bucketPath(settings.name), { body });
        toast(`Bucket ${settings.name} saved.`, "success");
        await loadBuckets();
      } catch (error) {
        errors.show(error);
        rules.showErrors(error);
      }
    });
    return form;
  }

  async function select(name) {
    bucket = name;
    const settings = buckets.find((b) => b.name === name) || (await client.request("GET", bucketPath(name)));
    settingsBox.replaceChildren(settingsForm(settings));
    uploadTitle.textContent = `Upload to ${name}`;
    filesTitle.textContent = `Files in ${name}`;
    await loadBuckets();
    await pages.first();
    if (unsubscribe) unsubscribe();
    unsubscribe = client.files.subscribe({ bucket: name }, () => {
      clearTimeout(reloadTimer);
      reloadTimer = setTimeout(() => attempt(() => pages.reload()), 200);
    });
    unsubscribe.ready.catch(showError);
  }

  function loadFiles(after) {
    return client.files.list({ bucket, sort: "-created", limit: PAGE_SIZE, after });
  }

  function preview(file) {
    if (!PREVIEWABLE.test(file.type)) return h("span.muted", {}, file.type.split("/")[0]);
    const img = h("img.thumb", { alt: `Preview of ${file.name}`, width: 48, height: 48 });
    client.files.download(file.id, { thumb: "96x96" })
      .then((response) => response.blob())
      .then((blob) => {
        const url = URL.createObjectURL(blob);
        objectUrls.push(url);
        img.src = url;
      })
      .catch((error) => img.replaceWith(h("span.field-error", {}, `No preview: ${error.message}`)));
    return img;
  }

  async function download(file) {
    const url = await client.files.signedUrl(file.id, { expiresIn: 300, download: true });
    const link = h("a", { href: url, download: file.name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
  }

  async function remove(file) {
    const ok = await dialog("Delete file", h("p", {}, "Delete ", h("strong", {}, file.name), "? This cannot be undone."),
      { submit: "Delete", danger: true });
    if (!ok) return;
    await client.files.delete(file.id);
    toast(`${file.name} deleted.`, "success");
    await pages.reload();
  }

  function drawFiles(files) {
    for (const url of objectUrls) URL.revokeObjectURL(url);
    objectUrls = [];
    filesBox.replaceChildren(table([
      { label: "Preview", cell: preview },
      { label: "Name", cell: (f) => f.name },
      { label: "Size", cell: (f) => formatBytes(f.size) },
      { label: "Type", cell: (f) => f.type },
      { label: "Public", cell: (f) => (f.public ? "yes" : "no") },
      { label: "Uploaded", cell: (f) => formatTime(f.created) },
      { label: "Actions", cell: (f) => h("div.row-actions", {},
        h("button", { type: "button", onclick: () => attempt(() => download(f)) }, "Download"),
        h("button.danger", { type: "button", onclick: () => attempt(() => remove(f)) }, "Delete")) },
    ], files, { empty: "No files in this bucket yet." }));
    const rendered = filesBox.querySelector("table");
    if (rendered) rendered.classList.add("stack", "files");
  }

  uploadForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = [...chooser.files];
    if (!chosen.length) {
      toast("Choose a file to upload first.", "error");
      return;
    }
    for (const file of chosen) {
      const bar = progress(file.name);
      uploads.append(bar.el);
      bar.set(0);
      attempt(async () => {
        try {
          await client.files.upload(file, { bucket, public: isPublic.checked, onProgress: ({ percent }) => bar.set(percent / 100) });
          toast(`${file.name} uploaded.`, "success");
          await pages.reload();
        } finally {
          bar.done();
        }
      });
    }
    chooser.value = "";
  });

  newBucket.addEventListener("click", () => attempt(async () => {
    const values = await dialog("New bucket", h("label", {}, "Name",
      h("input", { name: "name", required: true, pattern: "^[A-Za-z][A-Za-z0-9_]{0,63}$", autocomplete: "off" })), { submit: "Create" });
    if (!values) return;
    await client.request("PUT", bucketPath(values.name), { body: {} });
    toast(`Bucket ${values.name} created.`, "success");
    await loadBuckets();
    await select(values.name);
  }));

  await loadBuckets();
  await select(buckets.some((b) => b.name === ctx.query.get("bucket")) ? ctx.query.get("bucket") : "default");
  return () => {
    clearTimeout(reloadTimer);
    live.stop();
    if (unsubscribe) unsubscribe();
    for (const url of objectUrls) URL.revokeObjectURL(url);
  };
}
