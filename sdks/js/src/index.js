// Backpack JavaScript SDK: one ES module, no dependencies.
// Works in browsers and in Node >= 18 (global fetch; pass a WebSocket class
// for realtime in Node < 22, e.g. `import WebSocket from "ws"`).
// Served by every backpack at `GET /api/sdk.js`.

export const VERSION = "0.1.0";

const ID_RE = /^[A-Za-z0-9_-]{1,64}$/;
const COLLECTION_RE = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
const STATUS_CODES = {
  400: "bad_request",
  401: "unauthorized",
  403: "forbidden",
  404: "not_found",
  405: "method_not_allowed",
  409: "conflict",
  413: "payload_too_large",
  415: "unsupported_media_type",
  416: "range_not_satisfiable",
  429: "rate_limited",
  500: "internal",
  502: "bad_gateway",
  503: "unavailable",
  504: "gateway_timeout",
};

/** Every failure of a request: the contract's error body plus the request id. */
export class BackpackError extends Error {
  constructor({ status = 0, code = "network_error", message = "Request failed.", details = {}, requestId = null, retryAfter = null, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "BackpackError";
    this.status = status;
    this.code = code;
    this.details = details || {};
    this.requestId = requestId;
    this.retryAfter = retryAfter;
  }
}

function invalid(message) {
  return new TypeError(`backpack: ${message}`);
}

function checkId(id, what = "id") {
  if (typeof id !== "string" || !ID_RE.test(id)) {
    throw invalid(`${what} must be a string of 1..64 letters, digits, '_' or '-' (got ${JSON.stringify(id)})`);
  }
  return id;
}

function checkObject(value, what) {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw invalid(`${what} must be a plain object`);
  }
  return value;
}

function checkFunction(value, what) {
  if (typeof value !== "function") throw invalid(`${what} must be a function`);
  return value;
}

function ifMatchHeader(ifMatch) {
  if (ifMatch === undefined || ifMatch === null) return undefined;
  if (typeof ifMatch === "number" && Number.isInteger(ifMatch)) return `"${ifMatch}"`;
  if (typeof ifMatch === "object" && Number.isInteger(ifMatch.version)) return `"${ifMatch.version}"`;
  if (typeof ifMatch === "string" && ifMatch.length > 0) {
    return ifMatch === "*" || ifMatch.startsWith('"') || ifMatch.startsWith("W/") ? ifMatch : `"${ifMatch}"`;
  }
  throw invalid("ifMatch must be a version number, a record, or an ETag string");
}

function ifMatchVersion(ifMatch) {
  if (ifMatch === undefined || ifMatch === null) return undefined;
  if (typeof ifMatch === "number" && Number.isInteger(ifMatch)) return ifMatch;
  if (typeof ifMatch === "object" && Number.isInteger(ifMatch.version)) return ifMatch.version;
  if (typeof ifMatch === "string" && /^(W\/)?"?\d+"?$/.test(ifMatch)) return Number(ifMatch.replace(/\D/g, ""));
  throw invalid("ifMatch must be a version number or a record");
}

function joinList(value, what) {
  if (value === undefined || value === null) return undefined;
  if (Array.isArray(value)) return value.join(",");
  if (typeof value === "string") return value;
  throw invalid(`${what} must be a string or an array of strings`);
}

/** Query parameters shared by record, user and file lists. */
function listQuery(options = {}) {
  checkObject(options, "list options");
  const { filter, sort, limit, after, offset, fields, expand, count } = options;
  const query = {};
  if (filter !== undefined && filter !== null) {
    if (typeof filter === "string") query.filter = filter;
    else query.filter = JSON.stringify(checkObject(filter, "filter"));
  }
  const s = joinList(sort, "sort");
  if (s) query.sort = s;
  if (limit !== undefined) {
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw invalid("limit must be an integer in 1..1000");
    query.limit = String(limit);
  }
  if (offset !== undefined) {
    if (!Number.isInteger(offset) || offset < 0) throw invalid("offset must be a non-negative integer");
    query.offset = String(offset);
  }
  if (after !== undefined && after !== null) {
    if (typeof after !== "string") throw invalid("after must be the `next` cursor of a previous page");
    query.after = after;
  }
  const f = joinList(fields, "fields");
  if (f) query.fields = f;
  const e = joinList(expand, "expand");
  if (e) query.expand = e;
  if (count) query.count = "true";
  return query;
}

// ---------------------------------------------------------------- storage

class MemoryStorage {
  constructor() {
    this.map = new Map();
  }
  getItem(key) {
    return this.map.has(key) ? this.map.get(key) : null;
  }
  setItem(key, value) {
    this.map.set(key, String(value));
  }
  removeItem(key) {
    this.map.delete(key);
  }
}

function defaultStorage() {
  try {
    const ls = globalThis.localStorage;
    if (ls && typeof ls.getItem === "function") {
      const probe = "__backpack_probe__";
      ls.setItem(probe, "1");
      ls.removeItem(probe);
      return ls;
    }
  } catch {
    // Private mode, sandboxed iframe, or Node's experimental localStorage without a file.
  }
  return new MemoryStorage();
}

// ---------------------------------------------------------------- client

class Client {
  constructor(baseUrl, options = {}) {
    if (typeof baseUrl !== "string" || !/^https?:\/\//i.test(baseUrl)) {
      if (typeof baseUrl === "string" && baseUrl.startsWith("/") && globalThis.location) {
        baseUrl = new URL(baseUrl, globalThis.location.href).href;
      } else {
        throw invalid("createClient needs the backpack's base URL, e.g. http://localhost:8000");
      }
    }
    checkObject(options, "options");
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this._fetch = options.fetch || (globalThis.fetch ? globalThis.fetch.bind(globalThis) : null);
    if (!this._fetch) throw invalid("no fetch available: pass {fetch} in the options");
    this._customFetch = Boolean(options.fetch);
    this._WebSocket = options.WebSocket || globalThis.WebSocket || null;
    this.auth = new Auth(this, options);
    this.files = new Files(this);
    this.realtime = new Realtime(this, options.realtime || {});
    this._collections = new Map();
    this._channels = new Map();
  }

  url(path, query) {
    let url = this.baseUrl + path;
    if (query) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) params.set(k, String(v));
      const qs = params.toString();
      if (qs) url += "?" + qs;
    }
    return url;
  }

  /** Sends a request and returns the parsed JSON body (or null for 204). */
  async request(method, path, { query, body, headers = {}, form, auth = true, raw = false } = {}) {
    const init = { method, headers: { Accept: "application/json", ...headers } };
    const token = auth ? this.auth.token : null;
    if (token) init.headers.Authorization = `Bearer ${token}`;
    if (form !== undefined) {
      init.body = form;
    } else if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await this._fetch(this.url(path, query), init);
    } catch (cause) {
      throw new BackpackError({
        status: 0,
        code: "network_error",
        message: `Could not reach ${this.baseUrl}: ${cause && cause.message ? cause.message : cause}`,
        cause,
      });
    }
    return this._handle(response, token, raw);
  }

  async _handle(response, token, raw = false) {
    const requestId = response.headers.get("x-request-id");
    if (response.status >= 400) {
      const error = await errorFrom(response.status, await response.text().catch(() => ""), requestId, response.headers.get("retry-after"));
      if (error.status === 401 && token && token === this.auth.token && token.startsWith("bps_")) {
        this.auth._set(null, null); // the session ended: signed out everywhere in this client
      }
      throw error;
    }
    if (raw) return response;
    if (response.status === 204 || response.status === 304) return null;
    const text = await response.text();
    if (!text) return null;
    try {
      return JSON.parse(text);
    } catch (cause) {
      throw new BackpackError({ status: response.status, code: "bad_response", message: "The server answered with something that is not JSON.", requestId, cause });
    }
  }

  collection(name) {
    if (typeof name !== "string" || !COLLECTION_RE.test(name)) throw invalid(`invalid collection name ${JSON.stringify(name)}`);
    let c = this._collections.get(name);
    if (!c) this._collections.set(name, (c = new Collection(this, name)));
    return c;
  }

  channel(name) {
    if (typeof name !== "string" || name.length === 0 || name.length > 200) throw invalid("a channel name is a non-empty string");
    let ch = this._channels.get(name);
    if (!ch) this._channels.set(name, (ch = new Channel(this, name)));
    return ch;
  }

  batch() {
    return new Batch(this);
  }

  health() {
    return this.request("GET", "/api/health", { auth: false });
  }

  /** Closes the realtime connection (subscriptions are kept and resume on the next use). */
  close() {
    this.realtime.close();
  }
}

function statusMessage(status) {
  return `The server answered ${status}.`;
}

function errorFrom(status, text, requestId, retryAfter) {
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    // A proxy's HTML page, an empty body...
  }
  const e = body && typeof body === "object" && body.error && typeof body.error === "object" ? body.error : null;
  const details = (e && e.details && typeof e.details === "object" && e.details) || {};
  return new BackpackError({
    status: e && Number.isInteger(e.status) ? e.status : status,
    code: e && typeof e.code === "string" ? e.code : STATUS_CODES[status] || (status >= 500 ? "internal" : "bad_request"),
    message: e && typeof e.message === "string" ? e.message : statusMessage(status),
    details,
    requestId: requestId || (details.request_id ?? null),
    retryAfter: retryAfter ? Number(retryAfter) : null,
  });
}

// ---------------------------------------------------------------- collections

class Collection {
  constructor(client, name) {
    this.client = client;
    this.name = name;
    this.path = `/api/collections/${encodeURIComponent(name)}/records`;
  }

  list(options = {}) {
    return this.client.request("GET", this.path, { query: listQuery(options) });
  }

  async *iterate(options = {}) {
    let after = options.after;
    for (;;) {
      const page = await this.list({ ...options, after });
      for (const item of page.items) yield item;
      if (!page.next) return;
      after = page.next;
    }
  }

  get(id, { fields, expand } = {}) {
    checkId(id);
    return this.client.request("GET", `${this.path}/${id}`, {
      query: { fields: joinList(fields, "fields"), expand: joinList(expand, "expand") },
    });
  }

  create(data) {
    checkObject(data, "data");
    return this.client.request("POST", this.path, { body: data });
  }

  update(id, patch, { ifMatch } = {}) {
    checkId(id);
    checkObject(patch, "patch");
    return this.client.request("PATCH", `${this.path}/${id}`, { body: patch, headers: etagHeaders(ifMatch) });
  }

  replace(id, data, { ifMatch } = {}) {
    checkId(id);
    checkObject(data, "data");
    return this.client.request("PUT", `${this.path}/${id}`, { body: data, headers: etagHeaders(ifMatch) });
  }

  async delete(id, { ifMatch } = {}) {
    checkId(id);
    await this.client.request("DELETE", `${this.path}/${id}`, { headers: etagHeaders(ifMatch) });
  }

  /** subscribe(callback) or subscribe(filter, callback) → unsubscribe(). */
  subscribe(filter, callback) {
    if (typeof filter === "function") [filter, callback] = [undefined, filter];
    if (filter !== undefined && filter !== null) checkObject(filter, "filter");
    checkFunction(callback, "callback");
    return this.client.realtime.subscribe({ collection: this.name, filter: filter ?? undefined }, callback);
  }
}

function etagHeaders(ifMatch) {
  const value = ifMatchHeader(ifMatch);
  return value === undefined ? {} : { "If-Match": value };
}

// ---------------------------------------------------------------- batch

class Batch {
  constructor(client) {
    this.client = client;
    this.ops = [];
  }
  _op(op, collection, id, data, ifMatch) {
    this.client.collection(collection); // validates the name
    const entry = { op, collection };
    if (id !== undefined) entry.id = checkId(id);
    if (data !== undefined) entry.data = checkObject(data, "data");
    const version = ifMatchVersion(ifMatch);
    if (version !== undefined) entry.if_match = version;
    if (this.ops.length >= 1000) throw invalid("a batch holds at most 1000 operations");
    this.ops.push(entry);
    return this;
  }
  create(collection, data) {
    return this._op("create", collection, undefined, data);
  }
  update(collection, id, patch, { ifMatch } = {}) {
    return this._op("update", collection, id, patch, ifMatch);
  }
  replace(collection, id, data, { ifMatch } = {}) {
    return this._op("replace", collection, id, data, ifMatch);
  }
  delete(collection, id, { ifMatch } = {}) {
    return this._op("delete", collection, id, undefined, ifMatch);
  }
  async commit() {
    if (this.ops.length === 0) return [];
    const out = await this.client.request("POST", "/api/batch", { body: { ops: this.ops } });
    return out.results;
  }
}

// ---------------------------------------------------------------- auth

class Auth {
  constructor(client, options) {
    this.client = client;
    this.storage = options.storage || defaultStorage();
    this.storageKey = options.storageKey || `backpack:${client.baseUrl}`;
    this._listeners = new Set();
    this._token = null;
    this._user = null;
    this._load();
    if (options.token !== undefined) {
      // An explicit token (a session, or a secret key on a server) is kept in memory only.
      this._token = options.token;
      this._user = null;
      this._memoryOnly = true;
    }
    const w = globalThis.window;
    if (!options.storage && w && typeof w.addEventListener === "function" && this.storage === globalThis.localStorage) {
      // Another tab signed in or out: follow it.
      w.addEventListener("storage", (event) => {
        if (event.key !== this.storageKey || this._memoryOnly) return;
        const before = this._token;
        this._load();
        if (before !== this._token) {
          this.client.realtime._authChanged();
          this._emit();
        }
      });
    }
  }

  get token() {
    return this._token;
  }

  get user() {
    return this._user;
  }

  _load() {
    let saved = null;
    try {
      saved = JSON.parse(this.storage.getItem(this.storageKey) || "null");
    } catch {
      saved = null;
    }
    this._token = saved && typeof saved.token === "string" ? saved.token : null;
    this._user = saved && this._token ? saved.user || null : null;
  }

  _set(token, user) {
    const changed = token !== this._token;
    this._token = token || null;
    this._user = token ? user || null : null;
    if (!this._memoryOnly || !token) {
      this._memoryOnly = false;
      try {
        if (this._token) this.storage.setItem(this.storageKey, JSON.stringify({ token: this._token, user: this._user }));
        else this.storage.removeItem(this.storageKey);
      } catch {
        // Storage full or denied: the session still lives in memory.
      }
    }
    if (changed) this.client.realtime._authChanged();
    this._emit();
  }

  _emit() {
    for (const listener of [...this._listeners]) {
      try {
        listener(this._user, this._token);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  /** Calls callback(user|null, token|null) on every sign-in, sign-out and profile change. */
  onChange(callback) {
    checkFunction(callback, "callback");
    this._listeners.add(callback);
    return () => this._listeners.delete(callback);
  }

  /** Uses a token you already have (a session from elsewhere, or null to forget). */
  async setToken(token) {
    if (token !== null && typeof token !== "string") throw invalid("token must be a string or null");
    this._set(token, null);
    if (token) return this.me();
    return null;
  }

  async signup(email, password, data) {
    if (email && typeof email === "object") ({ email, password, data } = email);
    credentials(email, password);
    if (data !== undefined) checkObject(data, "data");
    const out = await this.client.request("POST", "/api/auth/signup", { body: data === undefined ? { email, password } : { email, password, data }, auth: false });
    this._set(out.token, out.user);
    return out.user;
  }

  async login(email, password) {
    if (email && typeof email === "object") ({ email, password } = email);
    credentials(email, password);
    const out = await this.client.request("POST", "/api/auth/login", { body: { email, password }, auth: false });
    this._set(out.token, out.user);
    return out.user;
  }

  async logout() {
    const token = this._token;
    try {
      if (token) await this.client.request("POST", "/api/auth/logout");
    } catch (error) {
      if (!(error instanceof BackpackError) || (error.status !== 401 && error.status !== 0)) throw error;
    } finally {
      if (this._token === token) this._set(null, null);
    }
  }

  async me() {
    const user = await this.client.request("GET", "/api/auth/me");
    if (this._token) this._set(this._token, user);
    return user;
  }

  async update(changes) {
    checkObject(changes, "changes");
    const user = await this.client.request("PATCH", "/api/auth/me", { body: changes });
    if (this._token) this._set(this._token, user);
    return user;
  }

  async requestPasswordReset(email) {
    if (typeof email !== "string" || !email.includes("@")) throw invalid("email must be an email address");
    await this.client.request("POST", "/api/auth/password/request", { body: { email }, auth: false });
  }

  async confirmPasswordReset(token, password) {
    if (typeof token !== "string" || !token) throw invalid("token must be the token from the reset link");
    checkPassword(password);
    await this.client.request("POST", "/api/auth/password/confirm", { body: { token, password }, auth: false });
  }

  async requestVerification() {
    await this.client.request("POST", "/api/auth/verify/request");
  }

  async confirmVerification(token) {
    if (typeof token !== "string" || !token) throw invalid("token must be the token from the verification link");
    await this.client.request("POST", "/api/auth/verify/confirm", { body: { token } });
    if (this._token) await this.me().catch(() => null);
  }

  providers() {
    return this.client.request("GET", "/api/auth/providers", { auth: false }).then((out) => out.items);
  }

  /** The URL that starts an OAuth sign-in. */
  oauthUrl(provider, { redirect } = {}) {
    if (typeof provider !== "string" || !/^[a-z0-9_-]{1,64}$/.test(provider)) throw invalid("provider must be a provider name such as 'github'");
    if (redirect === undefined && globalThis.location) redirect = globalThis.location.href.split("#")[0];
    return this.client.url(`/api/auth/oauth/${provider}`, redirect ? { redirect } : undefined);
  }

  /** Sends the browser to the provider; the sign-in comes back to `redirect` (default: this page). */
  loginWithOAuth(provider, options = {}) {
    const url = this.oauthUrl(provider, options);
    if (globalThis.location && typeof globalThis.location.assign === "function") globalThis.location.assign(url);
    return url;
  }

  /** After an OAuth redirect: takes `#token=` from the address, signs in and cleans the address. */
  async handleOAuthRedirect(href) {
    const loc = globalThis.location;
    const url = new URL(href || (loc ? loc.href : "http://invalid/"));
    const params = new URLSearchParams(url.hash.slice(1));
    const token = params.get("token");
    if (!token) return null;
    if (!href && globalThis.history && typeof globalThis.history.replaceState === "function") {
      params.delete("token");
      const rest = params.toString();
      globalThis.history.replaceState(globalThis.history.state, "", url.pathname + url.search + (rest ? "#" + rest : ""));
    }
    return this.setToken(token);
  }

  sessions() {
    return this.client.request("GET", "/api/auth/sessions").then((out) => out.items);
  }

  async revokeSession(id) {
    checkId(id, "session id");
    await this.client.request("DELETE", `/api/auth/sessions/${id}`);
  }
}

function checkPassword(password) {
  if (typeof password !== "string" || password.length < 8 || password.length > 256) {
    throw invalid("password must be a string of 8..256 characters");
  }
}

function credentials(email, password) {
  if (typeof email !== "string" || !email.includes("@")) throw invalid("email must be an email address");
  checkPassword(password);
}

// ---------------------------------------------------------------- files

function toBlob(data, name) {
  const B = globalThis.Blob;
  if (B && data instanceof B) return data;
  if (typeof data === "string") return new B([data], { type: "text/plain" });
  if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) return new B([data]);
  throw invalid(`upload takes a File, a Blob, bytes (ArrayBuffer / Uint8Array) or a string${name ? "" : ""}`);
}

class Files {
  constructor(client) {
    this.client = client;
  }

  async upload(data, { bucket, name, public: isPublic, onProgress } = {}) {
    if (data === undefined || data === null) throw invalid("upload needs something to upload");
    if (bucket !== undefined && (typeof bucket !== "string" || !COLLECTION_RE.test(bucket))) throw invalid("bucket must be a bucket name");
    if (onProgress !== undefined) checkFunction(onProgress, "onProgress");
    const blob = toBlob(data, name);
    const fileName = name ?? (typeof data.name === "string" && data.name ? data.name : "file");
    if (typeof fileName !== "string" || !fileName) throw invalid("name must be a non-empty string");
    const form = new FormData();
    // Fields first, so the bucket's limits apply while the bytes stream in.
    if (bucket !== undefined) form.append("bucket", bucket);
    form.append("name", fileName);
    if (isPublic !== undefined) form.append("public", isPublic ? "true" : "false");
    form.append("file", blob, fileName);
    const total = blob.size;
    const report = (loaded) => onProgress && onProgress({ loaded, total, percent: total ? Math.round((loaded / total) * 100) : 100 });
    if (onProgress && typeof globalThis.XMLHttpRequest === "function" && !this.client._customFetch) {
      return this._xhrUpload(form, report);
    }
    report(0);
    const file = await this.client.request("POST", "/api/files", { form });
    report(total);
    return file;
  }

  _xhrUpload(form, report) {
    const client = this.client;
    return new Promise((resolve, reject) => {
      const xhr = new globalThis.XMLHttpRequest();
      const token = client.auth.token;
      xhr.open("POST", client.url("/api/files"));
      xhr.setRequestHeader("Accept", "application/json");
      if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
      xhr.upload.onprogress = (event) => report(event.loaded);
      xhr.onerror = () => reject(new BackpackError({ status: 0, code: "network_error", message: `Could not reach ${client.baseUrl}.` }));
      xhr.onload = () => {
        const requestId = xhr.getResponseHeader("x-request-id");
        if (xhr.status >= 400) {
          const error = errorFrom(xhr.status, xhr.responseText, requestId, xhr.getResponseHeader("retry-after"));
          if (error.status === 401 && token && token === client.auth.token && token.startsWith("bps_")) client.auth._set(null, null);
          reject(error);
          return;
        }
        try {
          const file = JSON.parse(xhr.responseText);
          report(file.size ?? 0);
          resolve(file);
        } catch (cause) {
          reject(new BackpackError({ status: xhr.status, code: "bad_response", message: "The server answered with something that is not JSON.", requestId, cause }));
        }
      };
      xhr.send(form);
    });
  }

  get(id) {
    checkId(id);
    return this.client.request("GET", `/api/files/${id}`);
  }

  list(options = {}) {
    const query = listQuery({ ...options, bucket: undefined });
    if (options.bucket !== undefined) query.bucket = options.bucket;
    return this.client.request("GET", "/api/files", { query });
  }

  async *iterate(options = {}) {
    let after = options.after;
    for (;;) {
      const page = await this.list({ ...options, after });
      for (const item of page.items) yield item;
      if (!page.next) return;
      after = page.next;
    }
  }

  update(id, changes, { ifMatch } = {}) {
    checkId(id);
    checkObject(changes, "changes");
    return this.client.request("PATCH", `/api/files/${id}`, { body: changes, headers: etagHeaders(ifMatch) });
  }

  /** The content URL (public files, or with the session cookie). */
  url(id, { thumb, download } = {}) {
    checkId(id);
    if (thumb !== undefined && !/^\d{1,4}x\d{1,4}f?$/.test(String(thumb))) throw invalid("thumb must look like '200x200', '200x0' or '200x200f'");
    return this.client.url(`/api/files/${id}/content`, { thumb, download: download ? "1" : undefined });
  }

  /** A URL that serves the content without credentials for `expiresIn` seconds (default 3600). */
  async signedUrl(id, { expiresIn = 3600, thumb, download } = {}) {
    checkId(id);
    if (!Number.isInteger(expiresIn) || expiresIn < 1) throw invalid("expiresIn must be a positive number of seconds");
    const out = await this.client.request("POST", `/api/files/${id}/url`, { body: { expires_in: expiresIn } });
    const url = new URL(out.url, this.client.baseUrl + "/");
    if (thumb !== undefined) url.searchParams.set("thumb", String(thumb));
    if (download) url.searchParams.set("download", "1");
    return url.href;
  }

  /** The bytes, as a fetch Response (authenticated with the current token). */
  async download(id, { thumb, range } = {}) {
    const headers = range ? { Range: range } : {};
    const url = this.url(id, { thumb });
    return this.client.request("GET", url.slice(this.client.baseUrl.length), { headers, raw: true });
  }

  async delete(id, { ifMatch } = {}) {
    checkId(id);
    await this.client.request("DELETE", `/api/files/${id}`, { headers: etagHeaders(ifMatch) });
  }

  /** Live changes of file metadata: subscribe({bucket, filter}, callback) → unsubscribe(). */
  subscribe(options, callback) {
    if (typeof options === "function") [options, callback] = [{}, options];
    const { bucket, filter } = options || {};
    checkFunction(callback, "callback");
    return this.client.realtime.subscribe({ collection: "_files", bucket, filter }, callback);
  }
}

// ---------------------------------------------------------------- realtime

const CONNECTING = "connecting";
const OPEN = "open";
const CLOSED = "closed";

class Realtime {
  constructor(client, options) {
    this.client = client;
    this.subs = new Map(); // id -> {collection, filter, bucket, callback}
    this.nextSub = 1;
    this.ws = null;
    this.state = CLOSED;
    this.ready = false;
    this.user = null;
    this.attempt = 0;
    this.reconnectTimer = null;
    this.pingTimer = null;
    this.outbox = [];
    this.minDelay = options.minDelay ?? 250;
    this.maxDelay = options.maxDelay ?? 10000;
    this.pingInterval = options.pingInterval ?? 25000;
    this.listeners = new Set();
    this.everReady = false;
  }

  get connected() {
    return this.ready;
  }

  /** status callback: ("connecting" | "open" | "closed", detail) */
  onStatus(callback) {
    checkFunction(callback, "callback");
    this.listeners.add(callback);
    return () => this.listeners.delete(callback);
  }

  _status(status, detail) {
    for (const listener of [...this.listeners]) {
      try {
        listener(status, detail);
      } catch {
        // A status listener must not break the connection.
      }
    }
  }

  _wanted() {
    if (this.subs.size > 0) return true;
    for (const ch of this.client._channels.values()) if (ch.joined) return true;
    return false;
  }

  _ensure() {
    if (this.ws || this.reconnectTimer) return;
    this._connect();
  }

  _wsUrl() {
    return this.client.baseUrl.replace(/^http/i, "ws") + "/api/realtime";
  }

  _requireWebSocket() {
    const WS = this.client._WebSocket;
    if (!WS) {
      throw invalid("no WebSocket available: pass {WebSocket} to createClient (in Node < 22: `import WebSocket from 'ws'`)");
    }
    return WS;
  }

  _connect() {
    this.reconnectTimer = null;
    const WS = this._requireWebSocket();
    let ws;
    try {
      ws = new WS(this._wsUrl());
    } catch (error) {
      this._scheduleReconnect(error);
      return;
    }
    this.ws = ws;
    this.state = CONNECTING;
    this.ready = false;
    this._status(CONNECTING);
    ws.onopen = () => {
      if (this.ws !== ws) return;
      const token = this.client.auth.token;
      if (token) this._raw({ type: "auth", token });
      else this._raw({ type: "ping" }); // an anonymous connection: the server answers `ready` after its grace period
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      let message;
      try {
        message = JSON.parse(typeof event.data === "string" ? event.data : String(event.data));
      } catch {
        return;
      }
      this._message(message);
    };
    ws.onerror = () => {
      // onclose follows and reconnects.
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this._dropped(event);
    };
  }

  _dropped(event) {
    this.ws = null;
    this.ready = false;
    this.state = CLOSED;
    clearInterval(this.pingTimer);
    this.pingTimer = null;
    for (const ch of this.client._channels.values()) ch._disconnected();
    this._status(CLOSED, { code: event && event.code, reason: event && event.reason });
    if (this._wanted()) this._scheduleReconnect();
  }

  _scheduleReconnect() {
    if (this.reconnectTimer) return;
    const ceiling = Math.min(this.maxDelay, this.minDelay * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2); // exponential backoff, jittered
    this.attempt += 1;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this._wanted() && !this.ws) this._connect();
    }, delay);
  }

  _raw(message) {
    if (this.ws && this.ws.readyState === 1) {
      this.ws.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  _send(message) {
    if (this.ready) this._raw(message);
    else if (message.type === "broadcast") {
      if (this.outbox.length < 1000) this.outbox.push(message);
    }
    // subscribe / join are (re)sent from the state when the connection is ready.
  }

  _message(message) {
    switch (message.type) {
      case "ready": {
        const first = !this.ready;
        this.ready = true;
        this.state = OPEN;
        this.user = message.user ?? null;
        if (first) this._onReady();
        break;
      }
      case "change": {
        const sub = this.subs.get(message.sub);
        if (sub) deliver(sub.callback, { action: message.action, record: message.record });
        break;
      }
      case "ack": {
        const sub = this.subs.get(message.id);
        if (sub) {
          sub.resolve();
          if (sub.resyncOnAck) {
            sub.resyncOnAck = false;
            deliver(sub.callback, { action: "resync" });
          }
        }
        break;
      }
      case "resync": {
        const sub = this.subs.get(message.sub);
        if (sub) deliver(sub.callback, { action: "resync" });
        break;
      }
      case "error": {
        const error = errorFrom(message.error?.status ?? 400, JSON.stringify({ error: message.error }), null, null);
        const sub = message.id ? this.subs.get(message.id) : null;
        if (sub) {
          sub.reject(error);
          deliver(sub.callback, { action: "error", error });
        }
        else this._status("error", error);
        break;
      }
      case "broadcast": {
        const ch = this.client._channels.get(message.channel);
        if (ch) ch._broadcast(message);
        break;
      }
      case "presence": {
        const ch = this.client._channels.get(message.channel);
        if (ch) ch._presence(message);
        break;
      }
      default:
        break; // pong, and whatever a newer server adds
    }
  }

  _onReady() {
    const reconnected = this.everReady;
    this.everReady = true;
    this.attempt = 0;
    this._status(OPEN, { user: this.user });
    for (const [id, sub] of this.subs) {
      // Events may have been missed while the connection was down: once the server
      // has the subscription again, tell the callback to refetch.
      sub.resyncOnAck = reconnected;
      this._raw(subscribeMessage(id, sub));
    }
    for (const ch of this.client._channels.values()) if (ch.joined) ch._sendJoin();
    const outbox = this.outbox;
    this.outbox = [];
    for (const message of outbox) this._raw(message);
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => this._raw({ type: "ping" }), this.pingInterval);
    if (this.pingTimer && typeof this.pingTimer.unref === "function") this.pingTimer.unref();
  }

  subscribe({ collection, filter, bucket }, callback) {
    this._requireWebSocket();
    const id = `s${this.nextSub++}`;
    const sub = { collection, filter, bucket, callback };
    // `ready` settles when the server first acknowledges (or refuses) the subscription.
    sub.acked = new Promise((resolve, reject) => {
      sub.resolve = resolve;
      sub.reject = reject;
    });
    sub.acked.catch(() => {}); // refusals also reach the callback as {action: "error"}
    this.subs.set(id, sub);
    if (this.ready) this._raw(subscribeMessage(id, sub));
    else this._ensure();
    let active = true;
    const unsubscribe = () => {
      if (!active) return;
      active = false;
      this.subs.delete(id);
      if (this.ready) this._raw({ type: "unsubscribe", id });
      this._maybeClose();
    };
    unsubscribe.ready = sub.acked;
    return unsubscribe;
  }

  _maybeClose() {
    if (!this._wanted()) this.close();
  }

  /** The signed-in user changed: reconnect with the new credentials. */
  _authChanged() {
    if (this.ws) {
      const ws = this.ws;
      this._dropped({ code: 1000, reason: "credentials changed" });
      try {
        ws.close(1000, "credentials changed");
      } catch {
        // already closing
      }
      this.attempt = 0;
      if (this._wanted()) {
        clearTimeout(this.reconnectTimer);
        this.reconnectTimer = null;
        this._connect();
      }
    }
  }

  /** Closes the connection now; it opens again on the next subscribe or join. */
  close() {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    clearInterval(this.pingTimer);
    this.pingTimer = null;
    const ws = this.ws;
    this.ws = null;
    this.ready = false;
    this.state = CLOSED;
    this.everReady = false;
    this.attempt = 0;
    if (ws) {
      ws.onclose = null;
      try {
        ws.close(1000, "closed by the client");
      } catch {
        // ignore
      }
      for (const ch of this.client._channels.values()) ch._disconnected();
      this._status(CLOSED, { code: 1000, reason: "closed by the client" });
    }
  }
}

function subscribeMessage(id, sub) {
  const message = { type: "subscribe", id, collection: sub.collection };
  if (sub.filter !== undefined) message.filter = sub.filter;
  if (sub.bucket !== undefined) message.bucket = sub.bucket;
  return message;
}

function deliver(callback, event) {
  try {
    callback(event);
  } catch (error) {
    queueMicrotask(() => {
      throw error;
    });
  }
}

// ---------------------------------------------------------------- channels

class Channel {
  constructor(client, name) {
    this.client = client;
    this.name = name;
    this.joined = false;
    this.presence = undefined;
    this.state = {};
    this.handlers = new Map(); // event -> Set(callback); "*" for all events
    this.presenceHandlers = new Set();
  }

  /** Joins (again after every reconnect) with an optional presence object. */
  join(presence) {
    if (presence !== undefined && presence !== null) checkObject(presence, "presence");
    this.client.realtime._requireWebSocket();
    this.presence = presence ?? undefined;
    this.joined = true;
    const rt = this.client.realtime;
    if (rt.ready) this._sendJoin();
    else rt._ensure();
    return this;
  }

  _sendJoin() {
    const message = { type: "join", channel: this.name };
    if (this.presence !== undefined) message.presence = this.presence;
    this.client.realtime._raw(message);
  }

  leave() {
    if (!this.joined) return;
    this.joined = false;
    this.state = {};
    const rt = this.client.realtime;
    if (rt.ready) rt._raw({ type: "leave", channel: this.name });
    rt._maybeClose();
  }

  broadcast(event, data = null) {
    if (typeof event !== "string" || !event) throw invalid("event must be a non-empty string");
    const message = { type: "broadcast", channel: this.name, event };
    if (data !== undefined) message.data = data;
    const rt = this.client.realtime;
    rt._send(message);
    if (!rt.ready && this.joined) rt._ensure();
  }

  /** on(event, callback(data, {event, from})) → off(); event "*" receives every event. */
  on(event, callback) {
    if (typeof event !== "string" || !event) throw invalid("event must be a non-empty string");
    checkFunction(callback, "callback");
    let set = this.handlers.get(event);
    if (!set) this.handlers.set(event, (set = new Set()));
    set.add(callback);
    return () => set.delete(callback);
  }

  /** onPresence(callback({state, joins, leaves})) → off(). */
  onPresence(callback) {
    checkFunction(callback, "callback");
    this.presenceHandlers.add(callback);
    return () => this.presenceHandlers.delete(callback);
  }

  _broadcast(message) {
    const meta = { event: message.event, from: message.from ?? null, channel: this.name };
    for (const key of [message.event, "*"]) {
      const set = this.handlers.get(key);
      if (set) for (const cb of [...set]) deliver((d) => cb(d, meta), message.data);
    }
  }

  _presence(message) {
    this.state = message.state || {};
    const event = { state: this.state, joins: message.joins || {}, leaves: message.leaves || {} };
    for (const cb of [...this.presenceHandlers]) deliver(cb, event);
  }

  _disconnected() {
    if (Object.keys(this.state).length === 0) return;
    const leaves = this.state;
    this.state = {};
    const event = { state: {}, joins: {}, leaves };
    for (const cb of [...this.presenceHandlers]) deliver(cb, event);
  }
}

// ---------------------------------------------------------------- entry point

/**
 * createClient("http://localhost:8000", {storage, fetch, WebSocket, token})
 */
export function createClient(baseUrl, options = {}) {
  return new Client(baseUrl, options);
}

export default createClient;
