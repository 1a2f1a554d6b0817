import test from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer } from "node:net";
import { adminClient, userClient, unique, waitFor, createCollection, KEY, WebSocket, URL_ } from "./helpers.js";
import { createClient } from "../src/index.js";

test("subscribe: one socket, changes by any path, filters, unsubscribe", async () => {
  let sockets = 0;
  class Counting extends WebSocket {
    constructor(...args) {
      super(...args);
      sockets += 1;
    }
  }
  const ann = createClient(URL_, { WebSocket: Counting });
  await ann.auth.signup(`${unique("u")}@example.com`, "correct horse battery");
  const name = unique();
  await createCollection(name, { list: true, read: true, create: { "@auth": { $ne: null } }, update: { owner: "@auth.id" }, delete: { owner: "@auth.id" } });
  const col = ann.collection(name);
  const all = [];
  const done = [];
  const offAll = col.subscribe((e) => all.push(e));
  const offDone = col.subscribe({ done: true }, (e) => done.push(e));
  await Promise.all([offAll.ready, offDone.ready]);
  assert.equal(ann.realtime.connected, true);

  const r = await col.create({ title: "a", done: false });
  await waitFor(() => all.length === 1, { message: "create event" });
  assert.equal(all[0].action, "create");
  assert.equal(all[0].record.id, r.id);

  await col.update(r.id, { done: true });
  await waitFor(() => all.length === 2 && done.length === 1, { message: "update events" });
  assert.equal(all[1].action, "update");
  assert.equal(done[0].action, "create", "starts matching: create for the filtered subscription");

  // a batch written with the secret key is seen too
  await adminClient().batch().update(name, r.id, { done: false }).commit();
  await waitFor(() => all.length === 3 && done.length === 2, { message: "batch events" });
  assert.equal(done[1].action, "delete", "stops matching: delete for the filtered subscription");

  offDone();
  await col.delete(r.id);
  await waitFor(() => all.length === 4, { message: "delete event" });
  assert.equal(all[3].action, "delete");
  await new Promise((res) => setTimeout(res, 150));
  assert.equal(done.length, 2);

  assert.equal(sockets, 1, "one WebSocket for all subscriptions");
  offAll();
  await waitFor(() => !ann.realtime.connected, { message: "socket closed when nothing is subscribed" });
});

test("subscribe: rules apply (another user's private records are not sent)", async () => {
  const ann = await userClient();
  const bob = await userClient();
  const name = unique();
  await createCollection(name); // owner-only
  const seen = [];
  const off = bob.collection(name).subscribe((e) => seen.push(e));
  const mine = [];
  const off2 = ann.collection(name).subscribe((e) => mine.push(e));
  await Promise.all([off.ready, off2.ready]);
  await ann.collection(name).create({ secret: 1 });
  await waitFor(() => mine.length === 1);
  await new Promise((r) => setTimeout(r, 150));
  assert.deepEqual(seen, []);
  off();
  off2();
});

test("subscribe errors reach the callback as {action: 'error'}", async () => {
  const c = await userClient();
  const events = [];
  const off = c.collection(unique("missing")).subscribe((e) => events.push(e));
  await assert.rejects(off.ready, (e) => e.status === 404);
  await waitFor(() => events.length === 1, { message: "error event" });
  assert.equal(events[0].action, "error");
  assert.equal(events[0].error.status, 404);
  off();
});

test("channels: broadcast to others (not echoed), presence", async () => {
  const ann = await userClient();
  const bob = await userClient();
  const room = `room:${unique("r")}`;
  const annRoom = ann.channel(room);
  const bobRoom = bob.channel(room);
  const got = [];
  const presence = [];
  bobRoom.on("typing", (data, meta) => got.push({ data, meta }));
  const echoed = [];
  annRoom.on("*", (data) => echoed.push(data));
  annRoom.onPresence((p) => presence.push(p));
  annRoom.join({ name: "Ann" });
  bobRoom.join({ name: "Bob" });
  await waitFor(() => presence.length > 0 && Object.keys(presence.at(-1).state).length === 2, { message: "presence of two" });
  const names = Object.values(presence.at(-1).state).map((p) => p.name).sort();
  assert.deepEqual(names, ["Ann", "Bob"]);

  annRoom.broadcast("typing", { by: "ann" });
  await waitFor(() => got.length === 1, { message: "broadcast" });
  assert.deepEqual(got[0].data, { by: "ann" });
  assert.equal(got[0].meta.event, "typing");
  assert.equal(got[0].meta.from, ann.auth.user.id);
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(echoed, []);

  bobRoom.leave();
  await waitFor(() => Object.keys(presence.at(-1).state).length === 1, { message: "Bob left" });
  assert.deepEqual(Object.values(presence.at(-1).state), [{ name: "Ann" }]);
  annRoom.leave();
  ann.close();
  bob.close();
});

function freePort() {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function startServer(python, dataDir, port) {
  const proc = spawn(python, ["-m", "backpack", "serve-instance", "--data", dataDir, "--port", String(port)], {
    env: { ...process.env, BACKPACK_SECRET_KEY: KEY },
    stdio: "ignore",
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => {
    try {
      return (await fetch(`${url}/api/health`)).ok;
    } catch {
      return false;
    }
  }, { timeout: 30000, message: "server start" });
  return proc;
}

async function stopServer(proc) {
  if (proc.exitCode !== null) return;
  const exited = new Promise((r) => proc.once("exit", r));
  proc.kill("SIGTERM");
  await exited;
}

test("reconnect after a server restart: resubscribes and rejoins, callbacks kept", async (t) => {
  const python = process.env.BACKPACK_PYTHON;
  // These tests start servers of their own: they need the Python that runs Backpack.
  assert.ok(python, "set BACKPACK_PYTHON (tests/e2e/test_js_sdk.py does)");
  const dir = mkdtempSync(join(tmpdir(), "bp-js-"));
  const port = await freePort();
  let proc = await startServer(python, join(dir, "data"), port);
  const url = `http://127.0.0.1:${port}`;
  try {
    const admin = createClient(url, { token: KEY, WebSocket });
    const name = unique();
    await admin.collection(name).create({ n: 0 });
    const c = createClient(url, { token: KEY, WebSocket, realtime: { minDelay: 50, maxDelay: 500 } });
    const events = [];
    const statuses = [];
    c.realtime.onStatus((s) => statuses.push(s));
    const sub = c.collection(name).subscribe((e) => events.push(e));
    const other = createClient(url, { token: KEY, WebSocket });
    const room = other.channel("room:restart");
    const heard = [];
    c.channel("room:restart").on("hello", (d) => heard.push(d));
    c.channel("room:restart").join();
    room.join();
    await sub.ready;
    await waitFor(() => other.realtime.connected);
    await admin.collection(name).create({ n: 1 });
    await waitFor(() => events.length === 1);

    await stopServer(proc);
    await waitFor(() => !c.realtime.connected, { message: "disconnect noticed" });
    proc = await startServer(python, join(dir, "data"), port);
    await waitFor(() => c.realtime.connected && other.realtime.connected, { timeout: 15000, message: "reconnected" });
    await waitFor(() => events.some((e) => e.action === "resync"), { message: "resync after reconnect" });
    await admin.collection(name).create({ n: 2 });
    await waitFor(() => events.some((e) => e.action === "create" && e.record.n === 2), { message: "event after restart" });
    room.broadcast("hello", { again: true });
    await waitFor(() => heard.length === 1, { message: "broadcast after restart" });
    assert.ok(statuses.includes("closed") && statuses.lastIndexOf("open") > statuses.indexOf("closed"));
    c.close();
    other.close();
  } finally {
    await stopServer(proc);
    rmSync(dir, { recursive: true, force: true });
  }
});

test("server down at start: realtime keeps retrying, then connects", async (t) => {
  const python = process.env.BACKPACK_PYTHON;
  // These tests start servers of their own: they need the Python that runs Backpack.
  assert.ok(python, "set BACKPACK_PYTHON (tests/e2e/test_js_sdk.py does)");
  const dir = mkdtempSync(join(tmpdir(), "bp-js-"));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  let proc = null;
  try {
    const c = createClient(url, { token: KEY, WebSocket, realtime: { minDelay: 50, maxDelay: 300 } });
    const down = await c.collection("todos").list().catch((e) => e);
    assert.equal(down.status, 0);
    assert.equal(down.code, "network_error");
    assert.match(down.message, /Could not reach/);
    let attempts = 0;
    c.realtime.onStatus((s) => { if (s === "connecting") attempts += 1; });
    const events = [];
    c.collection("todos").subscribe((e) => events.push(e));
    await waitFor(() => attempts >= 3, { message: "retries" });
    proc = await startServer(python, join(dir, "data"), port);
    await waitFor(() => c.realtime.connected, { timeout: 15000, message: "connected once the server is up" });
    c.close();
  } finally {
    if (proc) await stopServer(proc);
    rmSync(dir, { recursive: true, force: true });
  }
});
