// The backpack's settings (GET/PATCH /api/settings through the SDK client with a console
// token): origins and sessions, SMTP, OAuth providers, rate limits, channels rules.
// Each section saves on its own; validation errors are shown in the section.

import { attempt, clear, dialog, errorBox, field, h, toast } from "../ui.js";

const MASK = "********";

export async function render(el, ctx) {
  const client = await ctx.client();
  const save = (patch) => client.request("PATCH", "/api/settings", { body: patch });
  let settings = await client.request("GET", "/api/settings");
  const sections = h("div.settings", {});
  el.append(h("h2", {}, "Settings"), sections);

  function draw() {
    clear(sections,
      general(settings), smtp(settings), oauth(settings), rateLimits(settings), channels(settings));
  }

  /** A section form: `collect(FormData)` builds the patch; errors stay in the section. */
  function section(title, children, collect, { note, extra } = {}) {
    const error = errorBox();
    const submit = h("button.primary", { type: "submit" }, "Save");
    const form = h("form.card.section", { "aria-label": title },
      h("h3", {}, title), note ? h("p.muted", {}, note) : null, children, error.el,
      h("div.actions", {}, extra, submit));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.show(null);
      submit.disabled = true;
      try {
        settings = await save(collect(new FormData(form), event.submitter));
        draw();
        toast(`${title}: saved.`, "success");
      } catch (failure) {
        error.show(failure);
      } finally {
        submit.disabled = false;
      }
    });
    return form;
  }

  function general(s) {
    return section("Origins and sessions", [
      h("label", {}, "Allowed origins (one per line; port wildcards like http://localhost:*, or *)",
        h("textarea", { name: "allowed_origins", rows: "4" }, s.allowed_origins.join("\n"))),
      field("App URL (links in mails; empty: the backpack's own address)", { name: "app_url", type: "url", value: s.app_url || "" }),
      field("Session lifetime (days)", { name: "session_ttl_days", type: "number", min: "1", max: "365", required: true, value: String(s.session_ttl_days) }),
    ], (data) => ({
      allowed_origins: lines(data.get("allowed_origins")),
      app_url: data.get("app_url").trim() || null,
      session_ttl_days: Number(data.get("session_ttl_days")),
    }));
  }

  function smtp(s) {
    const m = s.smtp || {};
    const tls = h("select", { name: "tls" }, ["starttls", "tls", "none"].map((v) =>
      h("option", { value: v, selected: (m.tls || "starttls") === v }, v)));
    const remove = s.smtp ? h("button.danger", { type: "submit", name: "remove", value: "1", formnovalidate: true }, "Remove SMTP") : null;
    return section("Mail (SMTP)", [
      field("Host", { name: "host", value: m.host || "", required: true }),
      field("Port", { name: "port", type: "number", min: "1", max: "65535", value: String(m.port || 587), required: true }),
      field("Username", { name: "username", value: m.username || "", autocomplete: "off" }),
      field("Password", { name: "password", type: "password", value: m.password || "", autocomplete: "new-password" }),
      field("Sender", { name: "sender", value: m.sender || "", placeholder: "My App <no-reply@example.com>", required: true }),
      h("label", {}, "TLS", tls),
    ], (data, submitter) => {
      if (submitter && submitter.name === "remove") return { smtp: null };
      return { smtp: {
        host: data.get("host").trim(), port: Number(data.get("port")), sender: data.get("sender").trim(),
        username: data.get("username") || null, password: data.get("password") || null, tls: data.get("tls"),
      } };
    }, {
      note: "Used for verification and password-reset mails. Save, then send a test mail to check.",
      extra: [remove, s.smtp ? testMailButton() : null],
    });
  }

  function testMailButton() {
    const button = h("button", { type: "button" }, "Send test mail…");
    button.addEventListener("click", () => attempt(async () => {
      const values = await dialog("Send a test mail",
        h("label", {}, "To", h("input", { name: "to", type: "email", required: true, autocomplete: "email" })),
        { submit: "Send" });
      if (!values) return;
      await client.request("POST", "/api/settings/test-mail", { body: { to: values.to } });
      toast(`A test mail went to ${values.to}.`, "success");
    }));
    return button;
  }

  function oauth(s) {
    const providers = Object.entries(s.oauth || {});
    const list = providers.length
      ? h("ul.providers", {}, providers.map(([name, p]) => {
        const remove = h("button.danger", { type: "button", "aria-label": `Remove ${name}` }, "Remove");
        remove.addEventListener("click", () => removeProvider(name, remove));
        return h("li", {}, h("strong", {}, name), ` client ${p.client_id}`, p.issuer ? ` · ${p.issuer}` : "", " ", remove);
      }))
      : h("p.muted", {}, "No provider yet.");
    return section("OAuth providers", [
      list,
      h("p", {}, "Add or change a provider (github, google, or any OpenID Connect name with its issuer):"),
      field("Provider name", { name: "provider", required: true, pattern: "[a-z][a-z0-9_\\-]{0,31}", placeholder: "github" }),
      field("Client ID", { name: "client_id", required: true, autocomplete: "off" }),
      field("Client secret", { name: "client_secret", type: "password", required: true, autocomplete: "new-password", placeholder: MASK }),
      field("Issuer (OpenID Connect only)", { name: "issuer", type: "url" }),
      field("Scopes (space-separated, optional)", { name: "scopes" }),
    ], (data) => {
      const config = { client_id: data.get("client_id").trim(), client_secret: data.get("client_secret") };
      if (data.get("issuer").trim()) config.issuer = data.get("issuer").trim();
      const scopes = data.get("scopes").trim();
      if (scopes) config.scopes = scopes.split(/\s+/);
      return { oauth: { [data.get("provider").trim()]: config } };
    });
  }

  async function removeProvider(name, button) {
    button.disabled = true;
    try {
      settings = await save({ oauth: { [name]: null } });
      draw();
      toast(`${name} was removed.`, "success");
    } catch (failure) {
      button.disabled = false;
      toast(failure.message, "error");
    }
  }

  function rateLimits(s) {
    const r = s.rate_limits;
    return section("Rate limits", [
      field("Sign-in and sign-up attempts per minute (per address and account; 0 = off)",
        { name: "auth_per_minute", type: "number", min: "0", required: true, value: String(r.auth_per_minute) }),
      field("API requests per minute (per caller; 0 = off)",
        { name: "api_per_minute", type: "number", min: "0", required: true, value: String(r.api_per_minute) }),
    ], (data) => ({ rate_limits: {
      auth_per_minute: Number(data.get("auth_per_minute")), api_per_minute: Number(data.get("api_per_minute")),
    } }));
  }

  function channels(s) {
    const hint = h("p.muted.hint", { "aria-live": "polite" }, "Valid JSON.");
    const text = h("textarea", { name: "channels", rows: "8", spellcheck: "false", "aria-describedby": "channels-hint" },
      JSON.stringify(s.channels, null, 2));
    hint.id = "channels-hint";
    text.addEventListener("input", () => {
      const problem = jsonProblem(text.value);
      hint.textContent = problem || "Valid JSON.";
      hint.className = problem ? "field-error hint" : "muted hint";
      text.setCustomValidity(problem || "");
    });
    return section("Channels rules", [
      h("label", {}, "Rules: [{\"pattern\": \"room:*\", \"join\": true | filter | null, \"broadcast\": …}]", text),
      hint,
    ], (data) => ({ channels: JSON.parse(data.get("channels")) }));
  }

  draw();
}

function lines(text) {
  return text.split("\n").map((line) => line.trim()).filter(Boolean);
}

function jsonProblem(text) {
  try {
    const value = JSON.parse(text);
    return Array.isArray(value) ? "" : "The rules must be a JSON list.";
  } catch (error) {
    return `Not valid JSON: ${error.message}`;
  }
}
