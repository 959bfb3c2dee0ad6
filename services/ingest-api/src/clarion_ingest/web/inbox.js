// The demo inbox page of Clarion: a bell with the unread badge, a live list, mark read,
// mark all read, preferences, and a toast for each new notification.
// Every piece of notification text is untrusted and is only ever set with textContent.

import { ClarionClient } from "./clarion.js";

const $ = (id) => document.getElementById(id);
const items = new Map(); // notification id -> {data, li}
let client = null;
let nextCursor = null;
let token = "";

function showMessage(text) {
  const el = $("message");
  el.textContent = text;
  el.hidden = !text;
}

function setBadge(count) {
  const badge = $("badge");
  badge.textContent = String(count);
  badge.hidden = count <= 0;
  document.title = count > 0 ? `(${count}) Clarion inbox` : "Clarion inbox";
}

function safeHref(url) {
  if (!url) return null;
  try {
    const parsed = new URL(url, window.location.href);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch (_) {
    return null;
  }
}

// REST items carry `id` and `read`; live frames carry the contract's `notification_id`.
function normalise(n) {
  return {
    id: n.id ?? n.notification_id,
    version: n.version,
    title: n.title,
    body: n.body,
    url: n.url,
    category: n.category,
    updated_at: n.updated_at,
    read: Boolean(n.read),
  };
}

function render(entry) {
  const { data } = entry;
  let li = entry.li;
  if (!li) {
    li = $("item-template").content.firstElementChild.cloneNode(true);
    li.querySelector(".mark-read").addEventListener("click", () => markRead(data.id));
    entry.li = li;
  }
  li.dataset.id = data.id;
  li.classList.toggle("unread", !data.read);
  const title = li.querySelector(".title");
  title.textContent = data.title;
  const href = safeHref(data.url);
  if (href) {
    title.setAttribute("href", href);
    title.setAttribute("rel", "noopener noreferrer");
  } else {
    title.removeAttribute("href");
  }
  li.querySelector(".body").textContent = data.body;
  li.querySelector(".category").textContent = data.category;
  const time = li.querySelector("time");
  time.dateTime = data.updated_at;
  time.textContent = new Date(data.updated_at).toLocaleString();
  return li;
}

function upsert(raw, { toTop = false } = {}) {
  const data = normalise(raw);
  let entry = items.get(data.id);
  if (entry && entry.data.version > data.version) return entry; // older version: ignore
  if (entry) entry.data = data;
  else entry = { data, li: null };
  items.set(data.id, entry);
  const li = render(entry);
  const list = $("list");
  if (toTop) list.prepend(li);
  else if (!li.isConnected) list.append(li);
  $("empty").hidden = items.size > 0;
  return entry;
}

function setRead(ids, read) {
  for (const id of ids) {
    const entry = items.get(id);
    if (!entry) continue;
    entry.data.read = read;
    render(entry);
  }
}

function remove(ids) {
  for (const id of ids) {
    const entry = items.get(id);
    if (entry && entry.li) entry.li.remove();
    items.delete(id);
  }
  $("empty").hidden = items.size > 0;
}

function toast(text) {
  const el = document.createElement("div");
  el.className = "toast";
  el.textContent = text;
  $("toasts").append(el);
  setTimeout(() => el.remove(), 5000);
}

async function markRead(id) {
  try {
    const updated = await client.markRead(id);
    setRead([updated.id ?? id], true);
  } catch (error) {
    showMessage(String(error.message || error));
  }
}

async function markAllRead() {
  try {
    await client.markAllRead();
    setRead([...items.keys()], true);
  } catch (error) {
    showMessage(String(error.message || error));
  }
}

// ------------------------------------------------------------------ preferences

function categoryRow(name, pref = {}) {
  const tr = document.createElement("tr");
  tr.dataset.category = name;
  const label = document.createElement("td");
  label.textContent = name;
  tr.append(label);
  for (const channel of ["in_app", "push", "email"]) {
    const td = document.createElement("td");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.name = channel;
    box.checked = pref[channel] !== false;
    td.append(box);
    tr.append(td);
  }
  return tr;
}

function fillPreferences(prefs) {
  const form = $("prefs-form");
  form.email_digest.value = prefs.email_digest;
  form.digest_hour.value = prefs.digest_hour;
  form.quiet_start.value = prefs.quiet_hours ? prefs.quiet_hours.start : "";
  form.quiet_end.value = prefs.quiet_hours ? prefs.quiet_hours.end : "";
  form.timezone.value = prefs.timezone || "";
  form.muted_objects.value = (prefs.muted_objects || []).join("\n");
  const rows = $("category-rows");
  rows.replaceChildren(
    ...Object.entries(prefs.categories || {}).map(([name, pref]) => categoryRow(name, pref)),
  );
  $("save-prefs").disabled = false;
}

function readPreferences() {
  const form = $("prefs-form");
  const categories = {};
  for (const tr of $("category-rows").querySelectorAll("tr")) {
    categories[tr.dataset.category] = Object.fromEntries(
      ["in_app", "push", "email"].map((c) => [c, tr.querySelector(`input[name=${c}]`).checked]),
    );
  }
  const start = form.quiet_start.value;
  const end = form.quiet_end.value;
  return {
    categories,
    muted_objects: form.muted_objects.value.split("\n").map((s) => s.trim()).filter(Boolean),
    email_digest: form.email_digest.value,
    digest_hour: Number(form.digest_hour.value),
    quiet_hours: start && end ? { start, end } : null,
    timezone: form.timezone.value.trim() || null,
  };
}

async function savePreferences(event) {
  event.preventDefault();
  $("prefs-status").textContent = "saving…";
  try {
    fillPreferences(await client.putPreferences(readPreferences()));
    $("prefs-status").textContent = "saved";
  } catch (error) {
    $("prefs-status").textContent = String(error.message || error);
  }
}

// ------------------------------------------------------------------ connection

async function devToken(user) {
  const res = await fetch(`/v1/dev/token?user=${encodeURIComponent(user)}`);
  if (!res.ok) throw new Error(`no development token endpoint (${res.status})`);
  const body = await res.json();
  return body.token ?? body.access_token;
}

async function connect(event) {
  if (event) event.preventDefault();
  const user = $("user").value.trim();
  token = $("token").value.trim();
  showMessage("");
  if (!token) {
    try {
      token = await devToken(user);
      $("token").value = token;
    } catch (_) {
      showMessage(`Paste a token: run "clarion dev-token ${user || "USER"}" and paste its output.`);
      return;
    }
  }
  if (client) client.stop();
  items.clear();
  $("list").replaceChildren();
  setBadge(0);
  const config = await (await fetch("/v1/config")).json();
  client = new ClarionClient({ gatewayUrl: config.gateway_url, apiBase: "", getToken: () => token });
  window.clarion = client; // for the console and automated checks
  client.addEventListener("state", (e) => {
    const status = $("status");
    status.dataset.state = e.detail.state;
    status.textContent = e.detail.state === "open" ? "live" : e.detail.state;
  });
  client.addEventListener("unread", (e) => setBadge(e.detail.count));
  client.addEventListener("refetch", (e) => {
    // Keep what arrived live while the page was being fetched; drop the rest.
    const fetched = new Set(e.detail.items.map((n) => n.id));
    for (const [id, entry] of items) {
      if (!fetched.has(id) && !(entry.frame > e.detail.sinceFrame)) remove([id]);
    }
    for (const n of e.detail.items) upsert(n);
    nextCursor = e.detail.next_cursor;
    $("more").hidden = !nextCursor;
    $("empty").hidden = items.size > 0;
  });
  client.addEventListener("notification", (e) => {
    const entry = upsert({ ...e.detail.notification, read: false }, { toTop: true });
    entry.frame = e.detail.frame;
    if (e.detail.kind === "created") toast(entry.data.title);
  });
  client.addEventListener("read", (e) => setRead(e.detail.ids, true));
  client.addEventListener("unread_state", (e) => setRead(e.detail.ids, false));
  client.addEventListener("all_read", () => setRead([...items.keys()], true));
  client.addEventListener("deleted", (e) => remove(e.detail.ids));
  client.addEventListener("error", (e) => showMessage(String(e.detail.error.message || e.detail.error)));
  client.addEventListener("connected", () => {
    $("read-all").disabled = false;
    client.getPreferences().then(fillPreferences).catch(() => {});
  });
  client.start();
  const url = new URL(window.location.href);
  url.searchParams.set("user", user);
  history.replaceState(null, "", url);
}

async function loadMore() {
  if (!nextCursor) return;
  const page = await client.listNotifications({ cursor: nextCursor });
  for (const n of page.items) upsert(n);
  nextCursor = page.next_cursor;
  $("more").hidden = !nextCursor;
}

$("login").addEventListener("submit", connect);
$("read-all").addEventListener("click", markAllRead);
$("more").addEventListener("click", loadMore);
$("prefs-form").addEventListener("submit", savePreferences);
$("new-category").addEventListener("change", (e) => {
  const name = e.target.value.trim();
  if (name && !$("category-rows").querySelector(`tr[data-category="${CSS.escape(name)}"]`)) {
    $("category-rows").append(categoryRow(name));
  }
  e.target.value = "";
});

// ?user=alice connects at once (with a development token where the server issues one);
// ?user=alice&token=... (or #token=...) with the given token.
const params = new URLSearchParams(window.location.search + "&" + window.location.hash.slice(1));
if (params.get("user")) $("user").value = params.get("user");
if (params.get("token")) $("token").value = params.get("token");
if (params.get("user") || params.get("token")) connect();
