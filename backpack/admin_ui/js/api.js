// The control plane's API (/admin/api) for the console. Every failure is thrown as an
// ApiError carrying the contract's error body; a 401 sends the admin to the login page
// and back to where they were afterwards.

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `The server answered ${status}.`);
    this.status = status;
    this.code = error.code || "unknown";
    this.details = error.details || {};
  }
}

let onUnauthorized = () => {};

/** Called with the current location when a request comes back 401. */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

async function request(method, path, { body, raw, headers = {}, quiet401 = false } = {}) {
  const init = { method, headers: { ...headers }, credentials: "same-origin" };
  if (raw !== undefined) {
    init.body = raw;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`/admin/api${path}`, init);
  } catch (cause) {
    throw new ApiError(0, { error: { message: `The server could not be reached (${cause.message}).` } });
  }
  if (response.ok) {
    if (response.status === 204) return null;
    const type = response.headers.get("content-type") || "";
    return type.includes("application/json") ? response.json() : response;
  }
  let parsed = null;
  try {
    parsed = await response.json();
  } catch {
    parsed = null;
  }
  const error = new ApiError(response.status, parsed);
  if (response.status === 401 && !quiet401) onUnauthorized(location.hash);
  throw error;
}

export const api = {
  get: (path, options) => request("GET", path, options),
  post: (path, body, options) => request("POST", path, { ...options, body }),
  put: (path, body, options) => request("PUT", path, { ...options, body }),
  patch: (path, body, options) => request("PATCH", path, { ...options, body }),
  delete: (path, options) => request("DELETE", path, options),
  /** POST or PUT a file or blob as the raw body (backups, sites). */
  upload: (method, path, blob, options) => request(method, path, { ...options, raw: blob }),
  request,
};

/**
 * Send `blob` as the raw body with XMLHttpRequest, whose upload events give progress:
 * onProgress(fraction). Resolves with the JSON answer; failures are ApiErrors.
 */
export function uploadWithProgress(method, path, blob, { onProgress } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, `/admin/api${path}`);
    xhr.setRequestHeader("Content-Type", blob.type || "application/octet-stream");
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable && onProgress) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      let parsed = null;
      try {
        parsed = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        parsed = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) return resolve(parsed);
      if (xhr.status === 401) onUnauthorized(location.hash);
      reject(new ApiError(xhr.status, parsed));
    });
    xhr.addEventListener("error", () =>
      reject(new ApiError(0, { error: { message: "The upload failed: the connection was lost." } })));
    xhr.send(blob);
  });
}

/**
 * Request `path` and read the answer as a file, with onProgress(fraction | null) while it
 * arrives (null when the size is unknown). Resolves with {blob, filename}.
 */
export async function downloadWithProgress(method, path, { onProgress } = {}) {
  const response = await request(method, path);
  if (!(response instanceof Response)) throw new ApiError(500, { error: { message: "Expected a file, got JSON." } });
  const total = Number(response.headers.get("content-length")) || 0;
  const reader = response.body.getReader();
  const chunks = [];
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    if (onProgress) onProgress(total ? loaded / total : null);
  }
  const disposition = response.headers.get("content-disposition") || "";
  const match = disposition.match(/filename="([^"]+)"/);
  const type = response.headers.get("content-type") || "application/octet-stream";
  return { blob: new Blob(chunks, { type }), filename: match ? match[1] : "download" };
}

/** The WebSocket URL of a backpack's live log (the admin's cookie goes with it). */
export function logStreamUrl(name, query) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const qs = query && query.toString() ? `?${query}` : "";
  return `${scheme}//${location.host}/admin/api/instances/${encodeURIComponent(name)}/logs/stream${qs}`;
}

const clients = new Map();

/**
 * A JS SDK client for backpack `name`, signed in with a console token (full access).
 * Tokens last 15 minutes; a fresh one is minted a minute before that.
 */
export async function backpackClient(name) {
  const cached = clients.get(name);
  if (cached && cached.expires > Date.now() + 60_000) return cached.client;
  const [{ createClient }, minted] = await Promise.all([
    import("/admin/sdk.js"),
    api.post(`/instances/${encodeURIComponent(name)}/token`),
  ]);
  const client = createClient(minted.api, { token: minted.token, storage: null });
  clients.set(name, { client, expires: Date.now() + minted.expires_in * 1000 });
  return client;
}

export function forgetClients() {
  clients.clear();
}
