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
