import test from "node:test";
import assert from "node:assert/strict";
import { BackpackError } from "../src/index.js";
import { adminClient, userClient, client, unique, createCollection } from "./helpers.js";

test("collections: create, get, update (merge patch), replace, delete", async () => {
  const c = await userClient();
  const name = unique();
  await createCollection(name);
  const todos = c.collection(name);
  const created = await todos.create({ title: "buy milk", done: false, tags: ["a"] });
  assert.equal(typeof created.id, "string");
  assert.equal(created.owner, c.auth.user.id);
  assert.equal(created.version, 1);
  assert.deepEqual(await todos.get(created.id), created);

  const patched = await todos.update(created.id, { done: true, tags: null });
  assert.equal(patched.done, true);
  assert.equal("tags" in patched, false, "null removes a field (RFC 7386)");
  assert.equal(patched.title, "buy milk");
  assert.equal(patched.version, 2);

  const replaced = await todos.replace(created.id, { title: "buy bread" });
  assert.equal(replaced.title, "buy bread");
  assert.equal("done" in replaced, false);

  const own = await todos.create({ id: "my-own-id", title: "x" });
  assert.equal(own.id, "my-own-id");

  await todos.delete(created.id);
  await assert.rejects(todos.get(created.id), (e) => e instanceof BackpackError && e.status === 404 && e.code === "not_found");
  c.close();
});

test("lists: filter, sort, fields, count, pagination with next, iterate", async () => {
  const admin = adminClient();
  const col = admin.collection(unique());
  const batch = admin.batch();
  for (let i = 0; i < 25; i++) batch.create(col.name, { n: i, even: i % 2 === 0, title: `t${i}` });
  await batch.commit();

  const evens = await col.list({ filter: { even: true }, sort: "-n", limit: 5, count: true });
  assert.equal(evens.total, 13);
  assert.deepEqual(evens.items.map((r) => r.n), [24, 22, 20, 18, 16]);
  assert.equal(typeof evens.next, "string");
  const page2 = await col.list({ filter: { even: true }, sort: "-n", limit: 5, after: evens.next });
  assert.deepEqual(page2.items.map((r) => r.n), [14, 12, 10, 8, 6]);

  const gt = await col.list({ filter: { n: { $gte: 20 } }, sort: ["n"], fields: ["n"] });
  assert.deepEqual(gt.items.map((r) => r.n), [20, 21, 22, 23, 24]);
  assert.deepEqual(Object.keys(gt.items[0]).sort(), ["id", "n"]);
  assert.equal(gt.next, null);

  const all = [];
  for await (const r of col.iterate({ sort: "n", limit: 7 })) all.push(r.n);
  assert.deepEqual(all, Array.from({ length: 25 }, (_, i) => i));

  await assert.rejects(col.list({ filter: { n: { $bogus: 1 } } }), (e) => e.status === 400 && e.code === "invalid_query");
});

test("If-Match: a stale version is a BackpackError 409 conflict", async () => {
  const admin = adminClient();
  const col = admin.collection(unique());
  const r = await col.create({ v: 1 });
  const r2 = await col.update(r.id, { v: 2 }, { ifMatch: r.version });
  assert.equal(r2.version, 2);
  const error = await col.update(r.id, { v: 3 }, { ifMatch: r.version }).catch((e) => e);
  assert.ok(error instanceof BackpackError);
  assert.equal(error.status, 409);
  assert.equal(error.code, "conflict");
  assert.equal(error.details.version, 2);
  await assert.rejects(col.replace(r.id, { v: 4 }, { ifMatch: r }), (e) => e.status === 409);
  const r3 = await col.replace(r.id, { v: 4 }, { ifMatch: r2 });
  assert.equal(r3.version, 3);
});

test("batch: all or nothing", async () => {
  const admin = adminClient();
  const name = unique();
  const col = admin.collection(name);
  const a = await col.create({ id: "a", n: 1 });
  const results = await admin
    .batch()
    .create(name, { id: "b", n: 2 })
    .update(name, "a", { n: 10 }, { ifMatch: a.version })
    .replace(name, "b", { n: 20 })
    .delete(name, "a")
    .commit();
  assert.equal(results.length, 4);
  assert.equal(results[1].n, 10);
  assert.equal(results[2].n, 20);
  assert.deepEqual(results[3], { id: "a", deleted: true });

  const error = await admin.batch().create(name, { id: "c" }).update(name, "missing", { n: 1 }).commit().catch((e) => e);
  assert.ok(error instanceof BackpackError);
  assert.equal(error.status, 404);
  assert.equal(error.details.op, 1);
  await assert.rejects(col.get("c"), (e) => e.status === 404);
});

test("errors carry status, code, message, details and the request id", async () => {
  const anon = client();
  const error = await anon.collection("nothere").list().catch((e) => e);
  assert.ok(error instanceof BackpackError);
  assert.ok(error instanceof Error);
  assert.equal(typeof error.status, "number");
  assert.equal(typeof error.code, "string");
  assert.equal(typeof error.message, "string");
  assert.ok(error.message.length > 0);
  assert.equal(typeof error.details, "object");
  assert.match(error.requestId, /^[A-Za-z0-9._-]+$/);

  const admin = adminClient();
  const forbidden = await (await userClient()).request("GET", "/api/collections").catch((e) => e);
  assert.equal(forbidden.status, 403);
  assert.equal(forbidden.code, "forbidden");
  const dup = admin.collection(unique());
  await dup.create({ id: "x" });
  const conflict = await dup.create({ id: "x" }).catch((e) => e);
  assert.equal(conflict.status, 409);
  assert.equal(conflict.code, "conflict");
});
