// Backups: create one and download it (with progress), or restore from a chosen archive
// (with upload progress). A restore replaces the backpack's data and key.

import { downloadWithProgress, forgetClients, uploadWithProgress } from "../api.js";
import { clear, dialog, errorBox, formatBytes, h, progress, toast } from "../ui.js";

export async function render(el, ctx) {
  const name = ctx.name;
  const created = h("div.result", {});
  const createError = errorBox();
  const create = h("button.primary", { type: "button" }, "Create backup");
  create.addEventListener("click", async () => {
    createError.show(null);
    create.disabled = true;
    const bar = progress("Downloading the backup");
    clear(created, bar.el);
    bar.set(null);
    try {
      const { blob, filename } = await downloadWithProgress("POST", `/instances/${name}/backup`, { onProgress: bar.set });
      bar.done();
      const url = URL.createObjectURL(blob);
      const link = h("a.button.download", { href: url, download: filename }, `Save ${filename}`);
      clear(created, h("p", {}, `Backup ready: ${formatBytes(blob.size)}. `, link),
        h("p.muted", {}, "It holds the secret key: keep it safe."));
      link.click();
    } catch (failure) {
      clear(created);
      createError.show(failure);
    } finally {
      create.disabled = false;
    }
  });

  const file = h("input", { type: "file", name: "archive", accept: ".tar,application/x-tar", required: true });
  const restoreError = errorBox();
  const restoreState = h("div.result", {});
  const restore = h("form.card", { "aria-label": "Restore" },
    h("h3", {}, "Restore from a file"),
    h("p.muted", {}, `Replaces ${name}'s data, files, site and secret key with the archive's. The archive is verified in full first: a damaged one changes nothing.`),
    h("label", {}, "Backup archive (.tar)", file),
    restoreError.el, restoreState,
    h("div.actions", {}, h("button.danger", { type: "submit" }, "Restore")));
  restore.addEventListener("submit", async (event) => {
    event.preventDefault();
    restoreError.show(null);
    const chosen = file.files[0];
    if (!chosen) return;
    const ok = await dialog("Restore backup", h("p", {},
      `Replace everything in ${name} with ${chosen.name} (${formatBytes(chosen.size)})?`), { submit: "Restore", danger: true });
    if (!ok) return;
    const bar = progress("Uploading the archive");
    clear(restoreState, bar.el);
    try {
      const instance = await uploadWithProgress("POST", `/instances/${name}/restore`, chosen, {
        onProgress: (fraction) => {
          bar.set(fraction);
          if (fraction >= 1) bar.el.firstChild.textContent = "Verifying and restoring";
        },
      });
      forgetClients();
      clear(restoreState, h("p.ok", { role: "status" }, `Restored ${chosen.name}: ${name} is ${instance.status}.`));
      toast(`${name} was restored.`, "success");
      restore.reset();
    } catch (failure) {
      clear(restoreState);
      restoreError.show(failure);
    }
  });

  el.append(
    h("h2", {}, "Backups"),
    h("section.card", { "aria-label": "Create a backup" },
      h("h3", {}, "Create a backup"),
      h("p.muted", {}, "A consistent snapshot taken online: database, files, site and secret key."),
      createError.el, created,
      h("div.actions", {}, create)),
    restore);
  return () => {
    const link = created.querySelector("a.download");
    if (link) URL.revokeObjectURL(link.href);
  };
}
