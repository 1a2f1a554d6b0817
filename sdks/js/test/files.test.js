import test from "node:test";
import assert from "node:assert/strict";
import { deflateSync } from "node:zlib";
import { BackpackError } from "../src/index.js";
import { userClient, client } from "./helpers.js";

function crc32(buf) {
  let c, crc = 0xffffffff;
  for (let n = 0; n < buf.length; n++) {
    c = (crc ^ buf[n]) & 0xff;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    crc = (crc >>> 8) ^ c;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

/** A w×h RGB PNG. */
function png(w, h) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  const rows = [];
  for (let y = 0; y < h; y++) rows.push(Buffer.from([0]), Buffer.alloc(w * 3, y % 256));
  return new Uint8Array(Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk("IHDR", ihdr), chunk("IDAT", deflateSync(Buffer.concat(rows))), chunk("IEND", Buffer.alloc(0))]));
}

test("files: upload bytes/Blob/string, get, list, url, signedUrl, thumb, delete", async () => {
  const c = await userClient();
  const progress = [];
  const image = png(64, 48);
  const file = await c.files.upload(image, { name: "pic.png", onProgress: (p) => progress.push(p.percent) });
  assert.equal(file.name, "pic.png");
  assert.equal(file.type, "image/png");
  assert.equal(file.size, image.length);
  assert.equal(file.bucket, "default");
  assert.equal(file.owner, c.auth.user.id);
  assert.deepEqual(progress, [0, 100]);

  const blob = await c.files.upload(new Blob(["hello world"], { type: "text/plain" }), { name: "hello.txt", public: true });
  assert.equal(blob.public, true);
  assert.equal(blob.size, 11);
  const text = await c.files.upload("plain text", { name: "t.txt" });
  assert.equal(text.size, 10);

  assert.deepEqual(await c.files.get(file.id), file);
  const listed = await c.files.list({ bucket: "default", sort: "name", count: true });
  assert.deepEqual(listed.items.map((f) => f.name), ["hello.txt", "pic.png", "t.txt"]);
  assert.equal(listed.total, 3);

  // A public file's URL works without credentials.
  const publicUrl = c.files.url(blob.id);
  assert.equal(await (await fetch(publicUrl)).text(), "hello world");
  assert.match(c.files.url(blob.id, { download: true }), /download=1/);
  const dl = await fetch(c.files.url(blob.id, { download: true }));
  assert.match(dl.headers.get("content-disposition"), /^attachment/);

  // A private file's plain URL needs credentials; the signed one does not.
  assert.equal((await fetch(c.files.url(file.id))).status, 404);
  const signed = await c.files.signedUrl(file.id, { expiresIn: 60 });
  const res = await fetch(signed);
  assert.equal(res.status, 200);
  assert.deepEqual(new Uint8Array(await res.arrayBuffer()), image);

  const thumbUrl = c.files.url(file.id, { thumb: "16x16" });
  assert.match(thumbUrl, /thumb=16x16/);
  const thumb = await c.files.download(file.id, { thumb: "16x16" });
  assert.equal(thumb.headers.get("content-type"), "image/png");
  const bytes = Buffer.from(await thumb.arrayBuffer());
  assert.equal(bytes.readUInt32BE(16), 16); // IHDR width
  assert.equal(bytes.readUInt32BE(20), 16); // IHDR height
  const signedThumb = await fetch(await c.files.signedUrl(file.id, { thumb: "8x0" }));
  assert.equal(signedThumb.status, 200);

  const renamed = await c.files.update(file.id, { name: "renamed.png" });
  assert.equal(renamed.name, "renamed.png");

  await c.files.delete(file.id);
  await assert.rejects(c.files.get(file.id), (e) => e instanceof BackpackError && e.status === 404);
  // Others do not see a private file.
  await assert.rejects(client().files.get(text.id), (e) => e.status === 404);
});
