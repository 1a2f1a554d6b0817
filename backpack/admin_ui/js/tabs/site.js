// The backpack's static site: publish a zip (with upload progress), open it, remove it.

import { uploadWithProgress } from "../api.js";
import { attempt, clear, dialog, errorBox, formatBytes, formatTime, h, progress, toast } from "../ui.js";

export async function render(el, ctx) {
  const { name, instance } = ctx;
  const info = h("div.site-info", {});
  const link = (href, label) => h("a", { href, target: "_blank", rel: "noopener" }, label);

  async function load() {
    let site = null;
    try {
      site = await ctx.api.get(`/instances/${name}/site`);
    } catch (failure) {
      if (failure.status !== 404) throw failure;
    }
    if (!site) {
      clear(info, h("p.muted.none", {}, "No site is published."));
      return;
    }
    const remove = h("button.danger", { type: "button" }, "Remove site");
    remove.addEventListener("click", async () => {
      const ok = await dialog("Remove the site", h("p", {}, `Unpublish ${name}'s site? Its URLs answer 404 afterwards.`), { submit: "Remove", danger: true });
      if (!ok) return;
      const done = await attempt(() => ctx.api.delete(`/instances/${name}/site`), { success: "The site was removed." });
      if (done !== undefined) await attempt(load);
    });
    clear(info,
      h("p.published", {}, `Published ${formatTime(site.published)}: ${site.files} files, ${formatBytes(site.bytes)}.`),
      h("ul", {},
        h("li", {}, "Open (host form, its own origin): ", link(instance.urls.host_site, instance.urls.host_site)),
        h("li", {}, "Open (path form, a sandboxed preview): ", link(instance.urls.site, instance.urls.site))),
      h("div.actions", {}, remove));
  }

  const file = h("input", { type: "file", name: "zip", accept: ".zip,application/zip", required: true });
  const error = errorBox();
  const state = h("div.result", {});
  const form = h("form.card", { "aria-label": "Publish a site" },
    h("h3", {}, "Publish a site"),
    h("p.muted", {}, "A zip with index.html at its top (or in one top folder). Publishing again replaces the site at once."),
    h("label", {}, "Site zip", file), error.el, state,
    h("div.actions", {}, h("button.primary", { type: "submit" }, "Publish")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.show(null);
    const chosen = file.files[0];
    if (!chosen) return;
    const bar = progress("Uploading the site");
    clear(state, bar.el);
    try {
      const site = await uploadWithProgress("PUT", `/instances/${name}/site`, chosen, { onProgress: bar.set });
      clear(state);
      toast(`Published ${site.files} files.`, "success");
      form.reset();
      await load();
    } catch (failure) {
      clear(state);
      error.show(failure);
    }
  });

  el.append(h("h2", {}, "Site"), h("section.card", { "aria-label": "Published site" }, info), form);
  await load();
}
