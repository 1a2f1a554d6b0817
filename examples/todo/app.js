// Backpack todo example: plain ES modules, no build step, only the Backpack SDK.
// The SDK is served by the backpack itself at /api/sdk.js, so the page loads it
// from whichever backpack it talks to: ?backpack=URL, or this page's own origin
// (when the page is deployed as the backpack's static site).

const params = new URLSearchParams(location.search);
const BACKPACK = (params.get("backpack") || location.origin).replace(/\/+$/, "");
const BUCKET = "attachments";
const ROOM = "room:lobby";

let createClient;
try {
  ({ createClient } = await import(`${BACKPACK}/api/sdk.js`));
} catch (error) {
  const box = document.getElementById("error");
  box.textContent = `Could not load the Backpack SDK from ${BACKPACK}/api/sdk.js. Is the backpack running? Pass ?backpack=URL to use another one.`;
  box.hidden = false;
  throw error;
}
const bp = createClient(BACKPACK);
const todos = bp.collection("todos");

const $ = (id) => document.getElementById(id);
const ui = {
  auth: $("auth"), authForm: $("auth-form"), email: $("email"), password: $("password"),
  app: $("app"), who: $("who"), whoEmail: $("who-email"), signout: $("signout"),
  status: $("status"), error: $("error"),
  addForm: $("add-form"), newTitle: $("new-title"), list: $("todos"), empty: $("empty"),
  online: $("online"), wave: $("wave"), feed: $("feed"),
  template: $("todo-template"),
};

// ------------------------------------------------------------------ messages

function say(text) {
  ui.status.textContent = text;
}

function fail(error) {
  console.error(error);
  ui.error.textContent = error?.message || String(error);
  ui.error.hidden = false;
}

function clearError() {
  ui.error.hidden = true;
  ui.error.textContent = "";
}

// ------------------------------------------------------------------ auth

ui.authForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearError();
  const action = event.submitter?.value || "signin";
  const email = ui.email.value.trim();
  const password = ui.password.value;
  if (!email || password.length < 8) {
    fail(new Error("Enter an email and a password of at least 8 characters."));
    return;
  }
  const buttons = ui.authForm.querySelectorAll("button");
  buttons.forEach((b) => (b.disabled = true));
  try {
    if (action === "signup") await bp.auth.signup(email, password);
    else await bp.auth.login(email, password);
    ui.password.value = "";
  } catch (error) {
    fail(error);
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
});

ui.signout.addEventListener("click", async () => {
  clearError();
  try {
    await bp.auth.logout();
  } catch (error) {
    fail(error);
  }
});

// The session lives in localStorage: onChange also fires when another tab of
// this origin signs in or out, and with null when the session expires.
let current = null;
let shown = false;

function show(user) {
  const id = user?.id ?? null;
  if (shown && id === (current?.id ?? null)) {
    current = user ?? null; // same user, new profile data
    return;
  }
  const first = !shown;
  shown = true;
  stop();
  current = user ?? null;
  ui.auth.hidden = !!user;
  ui.app.hidden = !user;
  ui.who.hidden = !user;
  ui.whoEmail.textContent = user?.email ?? "";
  if (user) {
    say(`Signed in as ${user.email}.`);
    start(user);
  } else if (!first) {
    say("Signed out.");
  }
}

// ------------------------------------------------------------------ todos

const items = new Map(); // id -> record
let unsubscribe = null;
let room = null;

async function start(user) {
  // Subscribe first, then load: a change that lands between the two is not lost.
  unsubscribe = todos.subscribe((event) => {
    if (event.action === "create" || event.action === "update") upsert(event.record);
    else if (event.action === "delete") remove(event.record.id);
    else if (event.action === "resync") load();
    else if (event.action === "error") fail(event.error);
  });
  joinRoom(user);
  try {
    await unsubscribe.ready;
  } catch (error) {
    fail(error);
  }
  await load();
}

function stop() {
  unsubscribe?.();
  unsubscribe = null;
  room?.leave();
  room = null;
  items.clear();
  for (const url of thumbs.values()) url.then((u) => u && URL.revokeObjectURL(u));
  thumbs.clear();
  ui.list.replaceChildren();
  ui.online.replaceChildren();
  ui.feed.replaceChildren();
  renderEmpty();
}

async function load() {
  try {
    const fresh = new Map();
    for await (const todo of todos.iterate({ sort: "created" })) fresh.set(todo.id, todo);
    for (const id of [...items.keys()]) if (!fresh.has(id)) remove(id);
    for (const todo of fresh.values()) upsert(todo);
  } catch (error) {
    fail(error);
  }
}

ui.addForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearError();
  const title = ui.newTitle.value.trim();
  if (!title) return;
  try {
    upsert(await todos.create({ title, done: false }));
    ui.newTitle.value = "";
    ui.newTitle.focus();
  } catch (error) {
    fail(error);
  }
});

function upsert(todo) {
  const known = items.get(todo.id);
  if (known && known.version > todo.version) return; // a late, older event
  items.set(todo.id, todo);
  let li = ui.list.querySelector(`li[data-id="${CSS.escape(todo.id)}"]`);
  if (!li) {
    li = buildItem(todo.id);
    // Keep creation order.
    const after = [...ui.list.children].find((el) => items.get(el.dataset.id)?.created > todo.created);
    ui.list.insertBefore(li, after ?? null);
  }
  fill(li, todo);
  renderEmpty();
}

function remove(id) {
  items.delete(id);
  ui.list.querySelector(`li[data-id="${CSS.escape(id)}"]`)?.remove();
  renderEmpty();
}

function renderEmpty() {
  ui.empty.hidden = items.size > 0;
}

function buildItem(id) {
  const li = ui.template.content.firstElementChild.cloneNode(true);
  li.dataset.id = id;
  const box = li.querySelector(".done");
  box.id = `done-${id}`;
  li.querySelector(".title").htmlFor = box.id;

  box.addEventListener("change", async () => {
    clearError();
    try {
      upsert(await todos.update(id, { done: box.checked }));
    } catch (error) {
      box.checked = !box.checked;
      fail(error);
    }
  });

  li.querySelector(".delete").addEventListener("click", async () => {
    clearError();
    const todo = items.get(id);
    try {
      await todos.delete(id);
      remove(id);
      if (todo?.attachment?.id) await bp.files.delete(todo.attachment.id).catch(() => {});
    } catch (error) {
      fail(error);
    }
  });

  li.querySelector(".attach-input").addEventListener("change", async (event) => {
    const input = event.target;
    const file = input.files?.[0];
    input.value = "";
    if (!file) return;
    clearError();
    const todo = items.get(id);
    say(`Uploading ${file.name}…`);
    try {
      const uploaded = await bp.files.upload(file, { bucket: BUCKET, name: file.name });
      upsert(await todos.update(id, { attachment: { id: uploaded.id, name: uploaded.name, type: uploaded.type } }));
      if (todo?.attachment?.id) await bp.files.delete(todo.attachment.id).catch(() => {});
      say(`Attached ${uploaded.name} to “${todo?.title ?? "todo"}”.`);
    } catch (error) {
      say("");
      fail(error);
    }
  });
  return li;
}

function fill(li, todo) {
  li.classList.toggle("is-done", !!todo.done);
  li.querySelector(".done").checked = !!todo.done;
  li.querySelector(".title").textContent = todo.title;
  li.querySelector(".attach-name").textContent = todo.title;
  li.querySelector(".delete-name").textContent = ` “${todo.title}”`;
  const slot = li.querySelector(".attachment");
  const attachment = todo.attachment;
  if (!attachment?.id) {
    slot.replaceChildren();
    delete slot.dataset.file;
    return;
  }
  if (slot.dataset.file === attachment.id) return;
  slot.dataset.file = attachment.id;
  const img = document.createElement("img");
  img.className = "thumb";
  img.width = 64;
  img.height = 64;
  img.alt = `Attachment: ${attachment.name}`;
  slot.replaceChildren(img);
  thumbnail(attachment.id).then((url) => {
    if (url && slot.dataset.file === attachment.id) img.src = url;
    else if (!url) img.replaceWith(document.createTextNode(attachment.name));
  });
}

// Attachments live in a bucket with owner-only rules, so a plain <img src> to
// files.url() would be refused (no credentials on a cross-origin image request,
// and the session is a bearer token, not a cookie here). We fetch the 64x64
// thumbnail with the token (files.download → files.url(id, {thumb}) plus the
// Authorization header) and show it as a blob: URL. Unlike a signed URL, this
// never puts a credential in the page, the history or a server log, and it
// needs no expiry handling.
const thumbs = new Map(); // file id -> Promise<blob URL | null>

function thumbnail(id) {
  if (!thumbs.has(id)) {
    thumbs.set(
      id,
      bp.files
        .download(id, { thumb: "64x64" })
        .then((response) => response.blob())
        .then((blob) => URL.createObjectURL(blob))
        .catch((error) => {
          console.warn("thumbnail", id, error);
          thumbs.delete(id);
          return null;
        }),
    );
  }
  return thumbs.get(id);
}

// ------------------------------------------------------------------ room

function joinRoom(user) {
  room = bp.channel(ROOM);
  room.onPresence(({ state, joins, leaves }) => {
    renderOnline(state);
    const online = emails(state);
    for (const email of emails(joins)) if (email !== user.email) note(`${email} is here`);
    for (const email of emails(leaves)) if (email !== user.email && !online.includes(email)) note(`${email} left`);
  });
  room.on("wave", (data) => note(`${data?.email ?? "Someone"} waved`));
  room.join({ email: user.email });
}

// One user may be online in several tabs: show each email once.
function emails(state) {
  return [...new Set(Object.values(state || {}).map((p) => p?.email).filter(Boolean))].sort();
}

function renderOnline(state) {
  const me = current?.email;
  ui.online.replaceChildren(
    ...emails(state).map((email) => {
      const li = document.createElement("li");
      li.textContent = email;
      li.dataset.email = email;
      if (email === me) {
        const you = document.createElement("span");
        you.className = "hint";
        you.textContent = " (you)";
        li.append(you);
      }
      return li;
    }),
  );
}

function note(text) {
  const li = document.createElement("li");
  li.textContent = text;
  ui.feed.prepend(li);
  while (ui.feed.children.length > 20) ui.feed.lastElementChild.remove();
}

ui.wave.addEventListener("click", () => {
  if (!room || !current) return;
  room.broadcast("wave", { email: current.email }); // not echoed back to us
  note("You waved");
});

// ------------------------------------------------------------------ start

bp.auth.onChange((user) => show(user));
show(bp.auth.user);
document.documentElement.dataset.ready = "true";
