import test from "node:test";
import assert from "node:assert/strict";
import { BackpackError, createClient } from "../src/index.js";
import { client, unique, URL_, adminClient } from "./helpers.js";

test("auth: signup, me, logout, login, update; token persisted in memory storage", async () => {
  const storage = new Map();
  const store = { getItem: (k) => storage.get(k) ?? null, setItem: (k, v) => storage.set(k, v), removeItem: (k) => storage.delete(k) };
  const c = client(URL_, { storage: store });
  const changes = [];
  c.auth.onChange((user, token) => changes.push([user && user.email, token]));
  assert.equal(c.auth.user, null);
  assert.equal(c.auth.token, null);

  const email = `${unique("u")}@example.com`;
  const user = await c.auth.signup(email, "correct horse battery", { name: "Ann" });
  assert.equal(user.email, email);
  assert.deepEqual(user.data, { name: "Ann" });
  assert.match(c.auth.token, /^bps_/);
  assert.equal(c.auth.user.id, user.id);
  assert.deepEqual(changes.at(-1), [email, c.auth.token]);

  // persisted: a second client on the same storage is signed in
  const again = client(URL_, { storage: store });
  assert.equal(again.auth.token, c.auth.token);
  assert.equal((await again.auth.me()).id, user.id);

  const updated = await c.auth.update({ data: { name: "Annie" } });
  assert.deepEqual(updated.data, { name: "Annie" });
  assert.deepEqual(c.auth.user.data, { name: "Annie" });

  const token = c.auth.token;
  await c.auth.logout();
  assert.equal(c.auth.token, null);
  assert.equal(c.auth.user, null);
  assert.deepEqual(changes.at(-1), [null, null]);
  assert.equal(storage.size, 0);

  // the old session is revoked: a client still holding it is signed out on its first 401
  const stale = createClient(URL_, { storage: { getItem: () => JSON.stringify({ token, user }), setItem() {}, removeItem() {} } });
  const staleChanges = [];
  stale.auth.onChange((u) => staleChanges.push(u));
  await assert.rejects(stale.auth.me(), (e) => e instanceof BackpackError && e.status === 401 && e.code === "unauthorized");
  assert.equal(stale.auth.token, null);
  assert.deepEqual(staleChanges, [null]);

  const back = await c.auth.login(email, "correct horse battery");
  assert.equal(back.id, user.id);
  assert.match(c.auth.token, /^bps_/);
  assert.notEqual(c.auth.token, token);

  const wrong = await client().auth.login(email, "wrong password!!").catch((e) => e);
  assert.equal(wrong.status, 401);
  const taken = await client().auth.signup(email, "another password").catch((e) => e);
  assert.equal(taken.status, 409);
});

test("auth: in Node the default storage is memory, per client", async () => {
  const a = client();
  await a.auth.signup(`${unique("u")}@example.com`, "correct horse battery");
  const b = client();
  assert.equal(b.auth.token, null);
});

test("auth: password reset and verification endpoints answer in the contract's shape", async () => {
  const c = client();
  // No SMTP is configured on the test server: the request endpoints say so with a 400.
  const e1 = await c.auth.requestPasswordReset("nobody@example.com").catch((e) => e);
  assert.ok(e1 === undefined || (e1 instanceof BackpackError && e1.status === 400), String(e1));
  const e2 = await c.auth.confirmPasswordReset("bpr_invalid", "new password 1").catch((e) => e);
  assert.ok(e2 instanceof BackpackError && [400, 401].includes(e2.status), String(e2));
  const e3 = await c.auth.confirmVerification("bpv_invalid").catch((e) => e);
  assert.ok(e3 instanceof BackpackError && [400, 401].includes(e3.status), String(e3));
});

test("auth: OAuth URLs and the #token= redirect", async () => {
  const c = client();
  const url = c.auth.oauthUrl("github", { redirect: "http://localhost:3000/done" });
  assert.equal(url, `${URL_}/api/auth/oauth/github?redirect=${encodeURIComponent("http://localhost:3000/done")}`);
  assert.equal(c.auth.loginWithOAuth("github", { redirect: "http://localhost:3000/done" }), url);

  const signedUp = client();
  await signedUp.auth.signup(`${unique("u")}@example.com`, "correct horse battery");
  const user = await c.auth.handleOAuthRedirect(`http://localhost:3000/done#token=${signedUp.auth.token}`);
  assert.equal(user.id, signedUp.auth.user.id);
  assert.equal(c.auth.token, signedUp.auth.token);
  assert.equal(await client().auth.handleOAuthRedirect("http://localhost:3000/done"), null);
});

test("auth: the secret key as a token is kept in memory only", async () => {
  const writes = [];
  const admin = createClient(URL_, { token: adminClient().auth.token, storage: { getItem: () => null, setItem: (k, v) => writes.push(v), removeItem() {} } });
  await admin.collection(unique()).create({ a: 1 });
  assert.deepEqual(writes, []);
});
