// Bad input and environments that need no server behaviour of their own
// (fake fetch, fake browser globals).
import test from "node:test";
import assert from "node:assert/strict";
import { createClient, BackpackError } from "../src/index.js";

function fakeFetch(respond) {
  const calls = [];
  const f = async (url, init) => {
    calls.push({ url, init });
    return respond(url, init);
  };
  f.calls = calls;
  return f;
}

test("invalid arguments throw before anything is sent", async () => {
  const f = fakeFetch(() => new Response("{}"));
  const c = createClient("http://example.test", { fetch: f });
  assert.throws(() => createClient("not a url"), TypeError);
  assert.throws(() => c.collection("bad name"), TypeError);
  assert.throws(() => c.collection(""), TypeError);
  const col = c.collection("todos");
  assert.throws(() => col.get("../etc"), TypeError);
  assert.throws(() => col.get(42), TypeError);
  assert.throws(() => col.create(null), TypeError);
  assert.throws(() => col.create([1]), TypeError);
  assert.throws(() => col.update("a", "nope"), TypeError);
  assert.throws(() => col.update("a", {}, { ifMatch: {} }), TypeError);
  assert.throws(() => col.list({ limit: 0 }), TypeError);
  assert.throws(() => col.list({ limit: 1001 }), TypeError);
  assert.throws(() => col.list({ filter: [1] }), TypeError);
  assert.throws(() => col.subscribe({}, "not a function"), TypeError);
  assert.throws(() => c.batch().create("todos", "x"), TypeError);
  assert.throws(() => c.files.url("a/b"), TypeError);
  assert.throws(() => c.files.url("a", { thumb: "big" }), TypeError);
  await assert.rejects(c.auth.signup("no-at-sign", "correct horse"), TypeError);
  await assert.rejects(c.auth.login("a@b.c", "short"), TypeError);
  await assert.rejects(c.files.upload(null), TypeError);
  await assert.rejects(c.files.upload({}), TypeError);
  await assert.rejects(c.files.signedUrl("a", { expiresIn: 0 }), TypeError);
  assert.throws(() => c.channel("").join(), TypeError);
  assert.throws(() => c.channel("x").broadcast(""), TypeError);
  assert.throws(() => c.channel("x").join("presence must be an object"), TypeError);
  assert.equal(f.calls.length, 0);
});

test("requests: query parameters, headers, If-Match", async () => {
  const f = fakeFetch(() => new Response(JSON.stringify({ items: [], next: null }), { headers: { "content-type": "application/json" } }));
  const c = createClient("http://example.test/i/todo/", { fetch: f, token: "bps_x" });
  await c.collection("todos").list({ filter: { done: false }, sort: ["-created", "title"], limit: 10, after: "cur", fields: ["title"], expand: "author", count: true });
  const url = new URL(f.calls[0].url);
  assert.equal(url.pathname, "/i/todo/api/collections/todos/records");
  assert.equal(url.searchParams.get("filter"), '{"done":false}');
  assert.equal(url.searchParams.get("sort"), "-created,title");
  assert.equal(url.searchParams.get("limit"), "10");
  assert.equal(url.searchParams.get("after"), "cur");
  assert.equal(url.searchParams.get("fields"), "title");
  assert.equal(url.searchParams.get("expand"), "author");
  assert.equal(url.searchParams.get("count"), "true");
  assert.equal(f.calls[0].init.headers.Authorization, "Bearer bps_x");
  await c.collection("todos").update("a", { x: 1 }, { ifMatch: 3 });
  assert.equal(f.calls[1].init.headers["If-Match"], '"3"');
  assert.equal(f.calls[1].init.method, "PATCH");
  assert.equal(f.calls[1].init.headers["Content-Type"], "application/json");
});

test("a non-JSON error page from a proxy is a typed BackpackError", async () => {
  const f = fakeFetch(() => new Response("<html><body>502 Bad Gateway</body></html>", { status: 502, headers: { "content-type": "text/html", "x-request-id": "proxy-1" } }));
  const c = createClient("http://example.test", { fetch: f });
  const error = await c.collection("todos").list().catch((e) => e);
  assert.ok(error instanceof BackpackError);
  assert.equal(error.status, 502);
  assert.equal(error.code, "bad_gateway");
  assert.equal(error.requestId, "proxy-1");
  assert.deepEqual(error.details, {});
  const ok = fakeFetch(() => new Response("not json", { status: 200 }));
  const e2 = await createClient("http://example.test", { fetch: ok }).collection("t").list().catch((e) => e);
  assert.ok(e2 instanceof BackpackError);
  assert.equal(e2.code, "bad_response");
});

test("429 carries retryAfter; 500 carries the request id from details", async () => {
  const f = fakeFetch(() => new Response(JSON.stringify({ error: { status: 429, code: "rate_limited", message: "Slow down.", details: {} } }), { status: 429, headers: { "retry-after": "7" } }));
  const e = await createClient("http://example.test", { fetch: f }).collection("t").list().catch((x) => x);
  assert.equal(e.code, "rate_limited");
  assert.equal(e.retryAfter, 7);
  const g = fakeFetch(() => new Response(JSON.stringify({ error: { status: 500, code: "internal", message: "Oops.", details: { request_id: "abc" } } }), { status: 500 }));
  const e2 = await createClient("http://example.test", { fetch: g }).collection("t").list().catch((x) => x);
  assert.equal(e2.requestId, "abc");
});

test("a 401 on an expired session signs out and onChange fires with null", async () => {
  const f = fakeFetch(() => new Response(JSON.stringify({ error: { status: 401, code: "unauthorized", message: "Session expired.", details: {} } }), { status: 401 }));
  const storage = { data: JSON.stringify({ token: "bps_old", user: { id: "u1" } }), getItem() { return this.data; }, setItem(k, v) { this.data = v; }, removeItem() { this.data = null; } };
  const c = createClient("http://example.test", { fetch: f, storage });
  assert.equal(c.auth.user.id, "u1");
  const seen = [];
  c.auth.onChange((user, token) => seen.push([user, token]));
  await assert.rejects(c.collection("t").list(), (e) => e.status === 401);
  assert.deepEqual(seen, [[null, null]]);
  assert.equal(storage.data, null);
});

test("browser: localStorage persistence and sync across tabs via the storage event", async () => {
  const store = new Map();
  const listeners = [];
  const saved = { localStorage: globalThis.localStorage, window: globalThis.window };
  globalThis.localStorage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, String(v)), removeItem: (k) => store.delete(k) };
  globalThis.window = { addEventListener: (type, fn) => type === "storage" && listeners.push(fn) };
  try {
    const f = fakeFetch(() => new Response(JSON.stringify({ user: { id: "u1", email: "a@b.c" }, token: "bps_1" }), { status: 201 }));
    const tab1 = createClient("http://example.test", { fetch: f });
    const tab2 = createClient("http://example.test", { fetch: f });
    const seen = [];
    tab2.auth.onChange((user) => seen.push(user && user.id));
    await tab1.auth.signup("a@b.c", "correct horse");
    assert.ok(store.get("backpack:http://example.test").includes("bps_1"));
    // The browser fires `storage` in the other tabs.
    for (const fn of listeners) fn({ key: "backpack:http://example.test" });
    assert.equal(tab2.auth.token, "bps_1");
    assert.deepEqual(seen, ["u1"]);
    store.clear();
    for (const fn of listeners) fn({ key: "backpack:http://example.test" });
    assert.equal(tab2.auth.token, null);
    assert.deepEqual(seen, ["u1", null]);
  } finally {
    globalThis.localStorage = saved.localStorage;
    globalThis.window = saved.window;
  }
});

test("browser: upload progress through XMLHttpRequest; fields before the file", async () => {
  const sent = [];
  class FakeXHR {
    constructor() {
      this.upload = {};
      this.headers = {};
    }
    open(method, url) {
      this.method = method;
      this.url = url;
    }
    setRequestHeader(k, v) {
      this.headers[k] = v;
    }
    getResponseHeader() {
      return "rid";
    }
    send(form) {
      sent.push(this, form);
      setTimeout(() => {
        this.upload.onprogress({ loaded: 5, total: 10 });
        this.upload.onprogress({ loaded: 10, total: 10 });
        this.status = 201;
        this.responseText = JSON.stringify({ id: "f1", size: 10 });
        this.onload();
      }, 5);
    }
  }
  const saved = globalThis.XMLHttpRequest;
  globalThis.XMLHttpRequest = FakeXHR;
  try {
    const c = createClient("http://example.test", { token: "bps_t" });
    const progress = [];
    const file = await c.files.upload(new Uint8Array(10), { bucket: "pics", name: "a.bin", public: false, onProgress: (p) => progress.push(p.percent) });
    assert.equal(file.id, "f1");
    assert.deepEqual(progress, [50, 100, 100]);
    const [xhr, form] = sent;
    assert.equal(xhr.url, "http://example.test/api/files");
    assert.equal(xhr.headers.Authorization, "Bearer bps_t");
    assert.deepEqual([...form.keys()], ["bucket", "name", "public", "file"]);
  } finally {
    globalThis.XMLHttpRequest = saved;
  }
});

test("realtime without a WebSocket implementation says how to pass one", () => {
  const saved = globalThis.WebSocket;
  globalThis.WebSocket = undefined;
  try {
    const c = createClient("http://example.test", { fetch: fakeFetch(() => new Response("{}")) });
    assert.throws(() => c.collection("t").subscribe(() => {}), /WebSocket/);
    assert.throws(() => c.channel("room").join(), /WebSocket/);
    assert.equal(c.realtime.subs.size, 0);
    assert.equal(c.channel("room").joined, false);
  } finally {
    globalThis.WebSocket = saved;
  }
});
