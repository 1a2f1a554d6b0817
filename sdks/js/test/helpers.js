// Shared by the tests: the server under test comes from the environment
// (tests/e2e/test_js_sdk.py starts one and sets these).
import { randomBytes } from "node:crypto";
import WebSocket from "ws";
import { createClient } from "../src/index.js";

export const URL_ = process.env.BACKPACK_URL;
export const KEY = process.env.BACKPACK_KEY;
if (!URL_ || !KEY) {
  throw new Error("Set BACKPACK_URL and BACKPACK_KEY (a running backpack and its secret key); `pytest tests/e2e/test_js_sdk.py` does it for you.");
}

export { WebSocket };

export function unique(prefix = "c") {
  return `${prefix}_${randomBytes(4).toString("hex")}`;
}

/** A client with the secret key (full access). */
export function adminClient(url = URL_) {
  return createClient(url, { token: KEY, WebSocket });
}

/** An anonymous client with in-memory storage. */
export function client(url = URL_, options = {}) {
  return createClient(url, { WebSocket, ...options });
}

/** A new signed-up user's client. */
export async function userClient(url = URL_) {
  const c = client(url);
  const email = `${unique("u")}@example.com`;
  await c.auth.signup(email, "correct horse battery");
  return c;
}

export async function waitFor(predicate, { timeout = 5000, message = "condition" } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${message}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function createCollection(name, rules) {
  const res = await fetch(`${URL_}/api/collections`, {
    method: "POST",
    headers: { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify(rules ? { name, rules } : { name }),
  });
  if (res.status !== 201) throw new Error(`creating ${name}: ${res.status} ${await res.text()}`);
  return res.json();
}
