// citelink web inbox: plain DOM, no framework, no build step.
//
// REST loads history and makes changes; the WebSocket delivers every change
// (whoever made it), so all of a user's tabs show the same inbox.
// Server data is only ever rendered as text (el() and textContent), never as
// HTML, so a message like <img onerror=...> shows up literally.

const PAGE_SIZE = 20;
const TOKENS_KEY = "citelink.tokens";
const HEARTBEAT_MS = 25000; // ping this often; no answer by the next beat means the link is dead
const MAX_BACKOFF_MS = 15000;

const $ = (selector) => document.querySelector(selector);
const $$ = (selector) => Array.from(document.querySelectorAll(selector));

const state = {
  tokens: null, // {access, refresh}, also in sessionStorage so a reload keeps the session
  me: null, // {id, username, is_staff}
  items: new Map(), // inbox items on screen, by id
  next: null, // `before` cursor of the next older page; null when all are loaded
  nextPosition: 0, // position of that oldest loaded item
  counts: { unseen: 0, unread: 0, total: 0, archived: 0 },
  // status: "all" (the inbox: not archived), "unread" or "archived"; tags: ids, none for any.
  filter: { status: "all", tags: new Set() },
  loadGeneration: 0, // drops answers to superseded page loads
  // The newest item seen (items come in the user's order, by position): a
  // reconnecting socket resumes after it.
  lastSeen: 0,
  lastPosition: 0,
  tags: new Map(), // id -> name
  users: new Map(), // id -> username (staff)
  keys: new Map(), // API key id -> name (staff)
  auditNext: null,
};

// DOM helpers ----------------------------------------------------------------

/** el("li", {class: "x", onclick: fn}, "text", node): strings become text nodes. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const formatTime = (iso) => (iso ? timeFormat.format(new Date(iso)) : "");

let toastTimer;
function toast(text, kind = "info") {
  const box = $("#toast");
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (box.hidden = true), kind === "error" ? 8000 : 4000);
}

function announce(text) {
  $("#announcer").textContent = text;
}

function showError(err) {
  toast(err instanceof ApiError ? err.message : "The server cannot be reached.", "error");
}

// REST -------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    const fields = body.errors ? Object.entries(body.errors).map(([f, m]) => `${f}: ${m}`) : [];
    super([body.detail || `HTTP ${status}`, ...fields].join(" — "));
    this.status = status;
  }
}

function request(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (state.tokens) headers.Authorization = `Bearer ${state.tokens.access}`;
  const init = { method, headers, body: body === undefined ? undefined : JSON.stringify(body) };
  return fetch(path, init);
}

/** JSON of a REST call; one transparent token refresh on a 401. */
async function api(method, path, body) {
  let res = await request(method, path, body);
  // 429: too many of this user's requests at once (the server did not run
  // it); wait as the server asks, a few times.
  for (let tries = 0; res.status === 429 && tries < 3; tries++) {
    const seconds = Number(res.headers.get("Retry-After")) || 1;
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    res = await request(method, path, body);
  }
  if (res.status === 401 && state.tokens && (await refreshAccess())) {
    res = await request(method, path, body);
  }
  if (res.status === 204) return null;
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

/** Every page of a `{results, next}` listing (small lists: tags, users). */
async function all(path, cap = 1000) {
  const rows = [];
  let before = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api("GET", `${path}${sep}limit=100${before ? `&before=${before}` : ""}`);
    rows.push(...page.results);
    before = page.next;
  } while (before && rows.length < cap);
  return rows;
}

// Tokens -----------------------------------------------------------------------

/** Expiry (ms) from the JWT's claims; only used to schedule the refresh. */
function expiry(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload)).exp * 1000;
  } catch {
    return 0;
  }
}

let refreshTimer;
let refreshing = null;

function setTokens(tokens) {
  state.tokens = tokens;
  sessionStorage.setItem(TOKENS_KEY, JSON.stringify(tokens));
  // Refresh a minute before expiry, or halfway for short-lived tokens.
  const left = expiry(tokens.access) - Date.now();
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refreshAccess, Math.max(1000, left - Math.min(60000, left / 2)));
}

/** A new token pair from the refresh token (which is then used up); false (and
 * signed out) when refused. */
function refreshAccess() {
  refreshing ??= (async () => {
    const refresh = state.tokens?.refresh;
    if (!refresh) return false;
    try {
      const res = await fetch("/api/token/refresh/", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh }),
      });
      if (state.tokens?.refresh !== refresh) return false; // signed out meanwhile
      if (res.status >= 400 && res.status < 500) {
        signOut("Your session has expired. Sign in again.");
        return false;
      }
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      setTokens(await res.json());
      // An open socket would be closed at the old token's expiry without this.
      sendFrame({ type: "auth", token: state.tokens.access });
      return true;
    } catch {
      // Offline or server trouble: keep the session and try again shortly.
      clearTimeout(refreshTimer);
      refreshTimer = setTimeout(refreshAccess, 10000);
      return false;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

// WebSocket ----------------------------------------------------------------------

const socket = { ws: null, attempt: 0, timer: null, heartbeat: null, answered: true, opened: false };

function sendFrame(frame) {
  if (socket.ws?.readyState === WebSocket.OPEN) socket.ws.send(JSON.stringify(frame));
}

function setConnection(kind, text) {
  const conn = $("#conn");
  conn.dataset.state = kind;
  conn.textContent = text;
  $("#retry").hidden = kind !== "waiting";
}

function connect() {
  clearTimeout(socket.timer);
  if (!state.tokens) return;
  setConnection("connecting", "Connecting…");
  const url = new URL("/ws/notifications/", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("token", state.tokens.access);
  // The extended protocol: counts, unread, resume, ping, auth.
  const ws = new WebSocket(url, ["citelink.v1"]);
  socket.ws = ws;

  ws.onopen = () => {
    setConnection("live", "Live");
    // Replays, in order, every item that arrived since the last one we saw.
    ws.send(JSON.stringify({ type: "resume", after: state.lastSeen }));
    // Reads and deletes made while we were away are not replayed: reload what is shown.
    if (socket.opened) resync();
    socket.opened = true;
    startHeartbeat(ws);
  };
  ws.onmessage = (event) => {
    // Reset the backoff only once the server talks: a socket that is accepted
    // and closed at once (database down, too many sockets) must not spin.
    socket.attempt = 0;
    socket.answered = true;
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    onFrame(frame);
  };
  ws.onclose = (event) => {
    if (socket.ws !== ws) return; // replaced or dropped on purpose
    socket.ws = null;
    clearInterval(socket.heartbeat);
    if (!state.tokens) return;
    if (event.code === 4401) {
      // Token refused or expired: get a fresh one, then come back.
      refreshAccess().then(() => state.tokens && reconnectLater());
      setConnection("connecting", "Signing in again…");
      return;
    }
    reconnectLater();
  };
}

/** Exponential backoff with jitter, so a restarted server is not hit by every tab at once. */
function reconnectLater() {
  const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** socket.attempt) * (0.5 + Math.random() / 2);
  socket.attempt += 1;
  setConnection("waiting", navigator.onLine ? "Reconnecting…" : "Offline");
  clearTimeout(socket.timer);
  socket.timer = setTimeout(connect, delay);
}

/** A half-open connection (laptop asleep, network gone) never fires onclose by itself. */
function startHeartbeat(ws) {
  socket.answered = true;
  clearInterval(socket.heartbeat);
  socket.heartbeat = setInterval(() => {
    if (!socket.answered) {
      dropSocket();
      reconnectLater();
      return;
    }
    socket.answered = false;
    ws.send(JSON.stringify({ type: "ping" }));
  }, HEARTBEAT_MS);
}

function dropSocket() {
  const ws = socket.ws;
  socket.ws = null;
  clearInterval(socket.heartbeat);
  clearTimeout(socket.timer);
  ws?.close();
}

function onFrame(frame) {
  switch (frame.type) {
    case "notification":
      receive(frame);
      break;
    case "seen":
    case "unseen":
    case "read":
    case "unread":
    case "archive":
    case "unarchive":
      changed(frame.id, FRAME_FIELDS[frame.type]);
      break;
    case "interact":
      // The frame carries no time: the local one stands in until the next reload.
      changed(frame.id, { ...FRAME_FIELDS.read, action: frame.action, interacted_at: new Date().toISOString() });
      break;
    case "delete":
      forget(frame.id);
      break;
    case "counts":
      setCounts(frame);
      break;
    case "refresh":
      // Too many items changed at once to be told one by one.
      resync();
      break;
    case "error":
      toast(frame.detail || "The server refused a request.", "error");
      break;
    default:
      break; // pong, and frame types this page does not use
  }
}

// Inbox --------------------------------------------------------------------------

// What each state frame changes in an item: reading implies seen.
const FRAME_FIELDS = {
  seen: { is_seen: true },
  unseen: { is_seen: false },
  read: { is_read: true, is_seen: true },
  unread: { is_read: false },
  archive: { is_archived: true },
  unarchive: { is_archived: false },
};

/** The bell counts unseen items: what arrived since the inbox was last opened. */
function setCounts(counts) {
  state.counts = counts;
  const count = counts.unseen;
  const badge = $("#badge");
  badge.textContent = count > 99 ? "99+" : String(count);
  badge.dataset.count = String(count);
  $("#bell").setAttribute("aria-label", `Open the inbox: ${count} new`);
  document.title = count > 0 ? `(${count}) citelink` : "citelink";
}

const STATUS_MATCHES = {
  all: (item) => !item.is_archived,
  unread: (item) => !item.is_archived && !item.is_read,
  archived: (item) => item.is_archived,
};

const matches = (item) =>
  STATUS_MATCHES[state.filter.status](item) &&
  (state.filter.tags.size === 0 || state.filter.tags.has(item.tag));

/** Whether a change may bring an item that is not on screen into the view. */
function mayEnter(fields) {
  const status = state.filter.status;
  if ("is_archived" in fields) return fields.is_archived === (status === "archived");
  return status === "unread" && fields.is_read === false;
}

/** The current view as filters: a query string (lists, seen-all) and a bulk body's filter. */
function viewParams() {
  const params = new URLSearchParams();
  if (state.filter.status !== "all") params.set("status", state.filter.status);
  for (const tag of state.filter.tags) params.append("tag", String(tag));
  return params;
}

function viewFilter() {
  const filter = { status: state.filter.status };
  if (state.filter.tags.size > 0) filter.tag = [...state.filter.tags];
  return filter;
}

// Older items than the oldest loaded one belong to a page not fetched yet.
const inLoadedRange = (item) => state.next === null || item.position > state.nextPosition;

/** A new item from the socket (live or replayed by resume). */
function receive(frame) {
  const item = { ...frame };
  delete item.type;
  const fresh = item.position > state.lastPosition;
  if (fresh) Object.assign(state, { lastSeen: item.id, lastPosition: item.position });
  if (!matches(item) || !inLoadedRange(item)) return;
  const row = show(item);
  if (fresh && row) {
    row.classList.add("arrived");
    announce(`New notification${item.tag_name ? ` on ${item.tag_name}` : ""}: ${item.message}`);
  }
}

/** A state change of any of the user's items (this tab or another), or the item as REST answers it. */
async function changed(id, fields) {
  const item = state.items.get(id);
  if (item) {
    Object.assign(item, fields);
    if (matches(item)) paint(item);
    else forget(id);
    return;
  }
  // Not on screen, but it may belong there now (e.g. unarchived, in the inbox).
  if (!mayEnter(fields)) return;
  try {
    const fetched = await api("GET", `/api/inbox/${id}/`);
    if (matches(fetched) && inLoadedRange(fetched)) show(fetched);
  } catch {
    // deleted meanwhile, or offline: nothing to show
  }
}

/** The item's tag name; null for a notification sent to listed users only (no tag). */
function tagName(item) {
  if (item.tag === null || item.tag === undefined) return null;
  return item.tag_name ?? state.tags.get(item.tag) ?? `tag ${item.tag}`;
}

/** Insert or update the row of an item, keeping the list newest first. */
function show(item) {
  const existing = state.items.get(item.id);
  if (existing) {
    Object.assign(existing, item);
    paint(existing);
    return null;
  }
  state.items.set(item.id, item);
  const row = renderItem(item);
  const list = $("#inbox-list");
  const older = Array.from(list.children).find((r) => Number(r.dataset.position) < item.position);
  list.insertBefore(row, older ?? null);
  paint(item);
  fitMessage(row);
  updateEmpty();
  return row;
}

/**
 * A long message is clamped to a few lines (app.css); its "Show more" button
 * is offered only where the clamp hides something. Measured, so again when
 * the inbox is shown or the window resized.
 */
function fitMessage(row) {
  const message = row.querySelector(".message");
  const expanded = row.classList.contains("expanded");
  row.querySelector(".expand").hidden = !expanded && message.scrollHeight <= message.clientHeight;
}

const fitMessages = () => $$("#inbox-list > li").forEach(fitMessage);

function toggleExpanded(event) {
  const button = event.currentTarget;
  const expanded = button.closest("li").classList.toggle("expanded");
  button.setAttribute("aria-expanded", String(expanded));
  button.textContent = expanded ? "Show less" : "Show more";
}

/**
 * An item's link as an href, or null. Rows inserted by plain SQL skip the
 * API's check, so the page checks again, by the API's rule (_link_problem in
 * citelink/api/notifications.py, and the element's safeLink): http(s) with a
 * host, or a path of this site that cannot become another one: no "//" at
 * the start, no backslash, no control character ("/\host" and "/<tab>/host"
 * are "//host" to a browser). Never javascript: or data:.
 */
function safeLink(value) {
  if (typeof value !== "string" || value.length < 1 || value.length > 2000) return null;
  if (/[\u0000-\u001f\u007f-\u009f\\]/.test(value) || value.startsWith(" ") || value.endsWith(" ")) {
    return null;
  }
  if (value.startsWith("/")) return value.startsWith("//") ? null : new URL(value, location.origin).href;
  // The host right after the two slashes: Chromium skips a third one (and takes its host).
  if (!/^https?:\/\/[^/]/i.test(value)) return null;
  try {
    const url = new URL(value);
    // Chromium takes a space in a host, as "%20".
    return url.hostname && !/[\s<>^|%]/.test(url.hostname) ? url.href : null;
  } catch {
    return null;
  }
}

/** The `{id, label, url?}` buttons of an item's data; anything else is left out. */
function actionsOf(item) {
  const actions = Array.isArray(item.data?.actions) ? item.data.actions.slice(0, 3) : [];
  return actions.filter((a) => typeof a?.id === "string" && typeof a.label === "string");
}

/** A link that opens in a new tab, knows nothing of this page, and records the click. */
function outLink(href, attrs, text, onclick) {
  return el("a", { ...attrs, href, target: "_blank", rel: "noopener noreferrer", onclick }, text);
}

function renderItem(item) {
  const tag = tagName(item);
  const hasData = item.data && typeof item.data === "object" && Object.keys(item.data).length > 0;
  const link = safeLink(item.data?.url);
  const choices = actionsOf(item).map((action) => {
    const href = safeLink(action.url);
    const attrs = { class: "choice", "data-action": action.id };
    const onclick = () => interact(item.id, action.id);
    return href
      ? outLink(href, { ...attrs, class: "choice button" }, action.label, onclick)
      : el("button", { ...attrs, type: "button", onclick }, action.label);
  });
  return el(
    "li",
    { class: "item", "data-id": item.id, "data-position": item.position },
    el(
      "div",
      { class: "body" },
      el(
        "div",
        { class: "meta" },
        tag !== null && el("span", { class: "tag" }, tag),
        el("time", { datetime: item.timestamp, title: item.timestamp }, formatTime(item.timestamp)),
        el("span", { class: "status" }),
        el("span", { class: "new" }, "New"),
      ),
      el("p", { class: "message" }, item.message),
      el(
        "button",
        { type: "button", class: "expand", "aria-expanded": "false", hidden: true, onclick: toggleExpanded },
        "Show more",
      ),
      link ? el("p", { class: "link" }, outLink(link, {}, item.data.url, () => interact(item.id))) : null,
      choices.length ? el("div", { class: "choices" }, choices) : null,
      hasData
        ? el(
            "details",
            { class: "data" },
            el("summary", {}, "Data"),
            el("pre", {}, JSON.stringify(item.data, null, 2)),
          )
        : null,
    ),
    el(
      "div",
      { class: "actions" },
      el("button", { type: "button", class: "toggle", onclick: () => toggleRead(item.id) }),
      el("button", { type: "button", class: "archive", onclick: () => toggleArchived(item.id) }),
      el("button", { type: "button", class: "delete danger", onclick: () => remove(item.id) }, "Delete"),
    ),
  );
}

/** The parts of a row that change: done in place so keyboard focus stays put. */
function paint(item) {
  const row = rowOf(item.id);
  if (!row) return;
  const about = item.message.slice(0, 80);
  row.classList.toggle("unread", !item.is_read);
  row.querySelector(".new").hidden = item.is_seen;
  const chosen = actionsOf(item).find((a) => a.id === item.action);
  const done = item.interacted_at ? ` · ${chosen?.label ?? "Opened"}` : "";
  row.querySelector(".status").textContent = (item.is_read ? "Read" : "Unread") + done;
  for (const choice of row.querySelectorAll(".choice")) {
    choice.classList.toggle("chosen", choice.dataset.action === item.action);
  }
  const label = (button, text) => {
    button.textContent = text;
    button.setAttribute("aria-label", `${text}: ${about}`);
  };
  label(row.querySelector(".toggle"), item.is_read ? "Mark unread" : "Mark read");
  label(row.querySelector(".archive"), item.is_archived ? "Unarchive" : "Archive");
  row.querySelector(".delete").setAttribute("aria-label", `Delete: ${about}`);
}

const rowOf = (id) => $(`#inbox-list > li[data-id="${Number(id)}"]`);

function forget(id) {
  state.items.delete(id);
  const row = rowOf(id);
  if (!row) return;
  // Keep keyboard users in the list when the focused row goes away.
  const hadFocus = row.contains(document.activeElement);
  const neighbour = row.nextElementSibling ?? row.previousElementSibling;
  row.remove();
  if (hadFocus) (neighbour?.querySelector("button") ?? $("#inbox-list")).focus();
  updateEmpty();
}

const EMPTY = {
  all: "Nothing here yet. Notifications on the tags you subscribe to will appear as they are published.",
  unread: "Nothing unread.",
  archived: "Nothing archived. Archived notifications leave the inbox and wait here.",
};

function updateEmpty() {
  const empty = $("#inbox-empty");
  empty.textContent = state.filter.tags.size ? "Nothing here with these tags." : EMPTY[state.filter.status];
  empty.hidden = state.items.size > 0 || state.next !== null;
  $("#load-more").hidden = state.next === null;
  for (const button of $$("[data-bulk]")) button.disabled = !empty.hidden;
}

/** The first page of the current view (reset) or the next older one. */
async function loadPage(reset, limit = PAGE_SIZE) {
  const generation = reset ? ++state.loadGeneration : state.loadGeneration;
  const params = viewParams();
  params.set("limit", String(limit));
  if (!reset && state.next) params.set("before", String(state.next));
  const list = $("#inbox-list");
  if (reset) {
    // Clear first: live items arriving during the fetch then land in an open range.
    state.items.clear();
    list.replaceChildren();
    list.setAttribute("aria-busy", "true");
    state.next = null;
  }
  try {
    const page = await api("GET", `/api/inbox/?${params}`);
    if (generation !== state.loadGeneration) return;
    state.next = page.next;
    state.nextPosition = page.results.at(-1)?.position ?? 0;
    // lastSeen moves only with the socket: a filtered page says nothing about
    // the items of other tags or states that the socket may not have sent yet.
    for (const item of page.results) show(item);
    updateEmpty();
  } finally {
    if (generation === state.loadGeneration) list.setAttribute("aria-busy", "false");
  }
}

/** The current view again, as much of it as is shown. */
const reload = () => loadPage(true, Math.min(100, Math.max(PAGE_SIZE, state.items.size)));

/**
 * Opening a view of the inbox marks everything it selects seen, in one
 * statement (seen-all with the view's filters), not a `seen` per row on
 * screen: the older pages not loaded yet would then stay counted, and the bell
 * of an inbox just opened would not go back to 0.
 */
async function markSeen() {
  try {
    await api("POST", `/api/inbox/seen-all/?${viewParams()}`);
    for (const item of state.items.values()) changed(item.id, FRAME_FIELDS.seen);
  } catch (err) {
    showError(err);
  }
}

async function openInbox() {
  await loadPage(true);
  await markSeen();
}

/** After a reconnect or a `refresh` frame: counts and the rows on screen may have changed. */
async function resync() {
  try {
    setCounts(await api("GET", "/api/inbox/counts/"));
    await reload();
  } catch (err) {
    showError(err);
  }
}

// The socket brings the result to every tab, this one included; applying the
// answer here as well keeps this tab right while its socket is reconnecting.
async function setState(id, fields) {
  try {
    changed(id, await api("PATCH", `/api/inbox/${id}/`, fields));
  } catch (err) {
    showError(err);
  }
}

function toggleRead(id) {
  const item = state.items.get(id);
  if (item) setState(id, { is_read: !item.is_read });
}

function toggleArchived(id) {
  const item = state.items.get(id);
  if (!item) return;
  announce(item.is_archived ? "Moved back to the inbox." : "Archived.");
  setState(id, { is_archived: !item.is_archived });
}

/** A click on the item's link (no action) or on one of its actions: recorded, and it reads the item. */
async function interact(id, action) {
  try {
    changed(id, await api("POST", `/api/inbox/${id}/interact/`, action === undefined ? {} : { action }));
  } catch (err) {
    showError(err);
  }
}

async function remove(id) {
  try {
    await api("DELETE", `/api/inbox/${id}/`);
    forget(id);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) forget(id);
    else showError(err);
  }
}

/** Resolves true when the person confirms `text` with the dialog's Delete button. */
function confirmDialog(text) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

const DONE = {
  seen: "marked seen",
  read: "marked read",
  archive: "archived",
  unarchive: "moved back to the inbox",
  delete: "deleted",
};

/** One action on everything the view selects, older pages included. */
async function bulk(action) {
  try {
    if (action === "delete") {
      const params = viewParams();
      params.delete("status"); // counts answer every status at once
      const counts = await api("GET", `/api/inbox/counts/?${params}`);
      const n = { all: counts.total, unread: counts.unread, archived: counts.archived }[state.filter.status];
      if (n === 0) {
        toast("Nothing to delete in this view.");
        return;
      }
      const what = n === 1 ? "the notification" : `all ${n} notifications`;
      if (!(await confirmDialog(`Delete ${what} in this view? This cannot be undone.`))) return;
    }
    const { updated } = await api("POST", "/api/inbox/bulk/", { action, filter: viewFilter() });
    toast(`${updated === 1 ? "1 notification" : `${updated} notifications`} ${DONE[action]}.`);
    // Items may have left the view, beyond the loaded pages too.
    await reload();
  } catch (err) {
    showError(err);
  }
}

// Tags, subscriptions, publishing, audit -------------------------------------------

async function loadTags() {
  const tags = await all("/api/tags/");
  tags.sort((a, b) => a.name.localeCompare(b.name));
  state.tags = new Map(tags.map((t) => [t.id, t.name]));
  const options = () => tags.map((t) => el("option", { value: t.id }, t.name));
  for (const id of state.filter.tags) if (!state.tags.has(id)) state.filter.tags.delete(id);
  $("#tag-choices").replaceChildren(
    ...tags.map((t) =>
      el("label", {}, el("input", { type: "checkbox", value: t.id, checked: state.filter.tags.has(t.id) }), t.name),
    ),
  );
  describeTagFilter();
  $("#pub-tag").replaceChildren(...options());
  renderTagList(tags);
}

function describeTagFilter() {
  const names = [...state.filter.tags].map((id) => state.tags.get(id));
  const shown = names.length > 2 ? `${names.slice(0, 2).join(", ")} +${names.length - 2}` : names.join(", ");
  $("#tag-filter summary").textContent = `Tags: ${shown || "any"}`;
}

function renderTagList(tags) {
  $("#tag-list").replaceChildren(
    ...tags.map((tag) =>
      el(
        "li",
        {},
        el("span", { class: "name" }, tag.name),
        el("span", { class: "muted" }, `#${tag.id}`),
        el(
          "button",
          { type: "button", class: "danger", "aria-label": `Delete tag ${tag.name}`, onclick: () => deleteTag(tag) },
          "Delete",
        ),
      ),
    ),
  );
}

async function createTag(event) {
  event.preventDefault();
  const input = $("#tag-name");
  try {
    const tag = await api("POST", "/api/tags/", { name: input.value.trim() });
    input.value = "";
    toast(`Tag "${tag.name}" created.`);
    await loadTags();
  } catch (err) {
    showError(err);
  }
}

async function deleteTag(tag) {
  try {
    await api("DELETE", `/api/tags/${tag.id}/`);
    toast(`Tag "${tag.name}" deleted.`);
    await loadTags();
  } catch (err) {
    showError(err);
  }
}

const subscriptionOwner = () => (state.me.is_staff ? Number($("#sub-user").value) : state.me.id);

let subscriptionsAsked = 0;

async function loadSubscriptions() {
  const asked = ++subscriptionsAsked;
  const owner = subscriptionOwner();
  const subs = await all(`/api/subscriptions/?user=${owner}`);
  // Another user was picked meanwhile: theirs is the list to show.
  if (asked !== subscriptionsAsked) return;
  const nameOf = (sub) => state.tags.get(sub.tag) ?? `tag ${sub.tag}`;
  subs.sort((a, b) => nameOf(a).localeCompare(nameOf(b)));
  const held = new Set(subs.map((s) => s.tag));
  $("#sub-list").replaceChildren(
    ...subs.map((sub) =>
      el(
        "li",
        {},
        el("span", { class: "name" }, nameOf(sub)),
        el(
          "button",
          {
            type: "button",
            class: "danger",
            "aria-label": `Unsubscribe from ${nameOf(sub)}`,
            onclick: () => unsubscribe(sub.id),
          },
          "Unsubscribe",
        ),
      ),
    ),
  );
  $("#sub-empty").hidden = subs.length > 0;
  const free = [...state.tags].filter(([id]) => !held.has(id));
  $("#sub-tag").replaceChildren(...free.map(([id, name]) => el("option", { value: id }, name)));
  // Nothing to pick: say why instead of an empty list and a dead button.
  $("#sub-tag-field").hidden = $("#sub-button").hidden = free.length === 0;
  const who = owner === state.me.id ? "You are" : `${state.users.get(owner) ?? "This user"} is`;
  const none = state.tags.size === 0 ? "There are no tags yet." : `${who} subscribed to every tag.`;
  const more = state.tags.size === 0 ? " Create one in Tags." : " Create more in Tags.";
  $("#sub-none").textContent = none + (state.me.is_staff ? more : "");
  $("#sub-none").hidden = free.length > 0;
}

async function subscribe(event) {
  event.preventDefault();
  const body = { tag: Number($("#sub-tag").value) };
  if (state.me.is_staff) body.user = subscriptionOwner();
  try {
    await api("POST", "/api/subscriptions/", body);
    await loadSubscriptions();
  } catch (err) {
    showError(err);
  }
}

async function unsubscribe(id) {
  try {
    await api("DELETE", `/api/subscriptions/${id}/`);
    await loadSubscriptions();
  } catch (err) {
    showError(err);
  }
}

async function loadUsers() {
  const users = await all("/api/users/");
  users.sort((a, b) => a.username.localeCompare(b.username));
  state.users = new Map(users.map((u) => [u.id, u.username]));
  const select = $("#sub-user");
  const chosen = select.value || String(state.me.id);
  select.replaceChildren(...users.map((u) => el("option", { value: u.id }, u.username)));
  select.value = chosen;
}

async function publish(event) {
  event.preventDefault();
  const form = event.target;
  const body = { tag: Number($("#pub-tag").value), message: $("#pub-message").value };
  const rawData = $("#pub-data").value.trim();
  if (rawData) {
    try {
      body.data = JSON.parse(rawData);
    } catch {
      body.data = null;
    }
    if (body.data === null || typeof body.data !== "object" || Array.isArray(body.data)) {
      toast("Data must be a JSON object, like {\"url\": \"/orders/42\"}.", "error");
      $("#pub-data").focus();
      return;
    }
  }
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const sent = await api("POST", "/api/notifications/", body);
    const n = sent.recipients;
    toast(`Published to ${n} ${n === 1 ? "subscriber" : "subscribers"}.`);
    $("#pub-message").value = "";
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
  }
}

// What an inbox item's audited change did, by the field that says it: [field, value, words].
const ITEM_CHANGES = [
  ["is_deleted", true, "Deleted"],
  ["is_deleted", false, "Restored"],
  ["is_expired", true, "Expired"],
  ["is_archived", true, "Archived"],
  ["is_archived", false, "Unarchived"],
  ["is_read", true, "Read"],
  ["is_read", false, "Marked unread"],
  ["is_seen", true, "Saw"],
  ["is_seen", false, "Marked unseen"],
];

/** An audit entry in words: "Read inbox item 4", "Subscribed alice to "news"". */
function describeEntry(entry) {
  const changes = entry.changes ?? {};
  const after = (field) => (Array.isArray(changes[field]) ? changes[field][1] : undefined);
  const before = (field) => (Array.isArray(changes[field]) ? changes[field][0] : undefined);
  const value = (field) => (entry.action === "delete" ? before(field) : after(field));
  const quote = (text) => `"${String(text).length > 60 ? `${String(text).slice(0, 59)}…` : text}"`;
  const tag = (id) => quote(state.tags.get(id) ?? `tag ${id}`);
  const user = (id) => state.users.get(id) ?? `user ${id}`;
  const id = entry.object_id;
  switch (`${entry.resource} ${entry.action}`) {
    case "tag create":
      return `Created tag ${quote(after("name"))}`;
    case "tag delete":
      return `Deleted tag ${quote(before("name"))}`;
    case "tag update":
      return "name" in changes
        ? `Renamed tag ${quote(before("name"))} to ${quote(after("name"))}`
        : `Made tag ${tag(id)} ${after("critical") ? "critical" : "not critical"}`;
    case "subscription create":
      return `Subscribed ${user(value("user_id"))} to ${tag(value("tag_id"))}`;
    case "subscription delete":
      return `Unsubscribed ${user(value("user_id"))} from ${tag(value("tag_id"))}`;
    case "subscription update":
      return `Set subscription ${id} to ${after("mode")}`;
    case "notification create": {
      const on = value("tag_id") === null ? "" : ` on ${tag(value("tag_id"))}`;
      const n = after("recipients");
      return `Published ${quote(value("message"))}${on} to ${n} ${n === 1 ? "recipient" : "recipients"}`;
    }
    case "notification delete":
      return `Deleted notification ${id} (${quote(before("message"))})`;
    case "user_notification create":
      return `Put notification ${value("notification_id")} in ${user(value("user_id"))}'s inbox`;
    case "user_notification delete":
      return `Removed inbox item ${id}`;
    case "users create":
      return `Created ${after("is_staff") ? "staff user" : "user"} ${quote(after("username"))}`;
    case "api_key create":
      return `Made API key ${quote(after("name"))} (${(after("scopes") ?? []).join(", ")})`;
    case "api_key update":
      if (after("revoked_at")) return `Revoked API key ${quote(state.keys.get(id) ?? id)}`;
      break;
    case "user_notification update": {
      if (after("action")) return `Chose ${quote(after("action"))} on inbox item ${id}`;
      const found = ITEM_CHANGES.find(([field, to]) => after(field) === to);
      if (found) return `${found[2]} inbox item ${id}`;
      break;
    }
    default:
      break;
  }
  const fields = Object.keys(changes).join(", ");
  return `${entry.action[0].toUpperCase()}${entry.action.slice(1)}d ${entry.resource.replace("_", " ")} ${id}${fields ? ` (${fields})` : ""}`;
}

/** Who made a change: a user, an API key (by name), or plain SQL (neither). */
function describeActor(entry) {
  if (entry.actor !== null) return state.users.get(entry.actor) ?? `user ${entry.actor}`;
  if (entry.actor_key !== null) return `API key "${state.keys.get(entry.actor_key) ?? entry.actor_key}"`;
  return "plain SQL";
}

async function loadKeys() {
  const keys = await all("/api/keys/");
  state.keys = new Map(keys.map((k) => [k.id, k.name]));
}

async function loadAudit(reset) {
  const params = new URLSearchParams({ limit: "50" });
  const resource = $("#audit-resource").value;
  if (resource) params.set("resource", resource);
  if (!reset && state.auditNext) params.set("before", String(state.auditNext));
  try {
    const page = await api("GET", `/api/audit/?${params}`);
    const rows = page.results.map((entry) => {
      const { resource, object_id, action, changes } = entry;
      const raw = JSON.stringify({ resource, object_id, action, changes }, null, 2);
      return el(
        "tr",
        {},
        el("td", { class: "nowrap" }, formatTime(entry.timestamp)),
        el("td", {}, describeActor(entry)),
        el("td", { class: "what" }, describeEntry(entry)),
        el("td", {}, el("details", { class: "data" }, el("summary", {}, "Row"), el("pre", {}, raw))),
      );
    });
    if (reset) $("#audit-rows").replaceChildren(...rows);
    else $("#audit-rows").append(...rows);
    state.auditNext = page.next;
    $("#audit-more").hidden = page.next === null;
  } catch (err) {
    showError(err);
  }
}

// Views and session ------------------------------------------------------------------

const viewLoaders = {
  inbox: markSeen, // the list itself is kept live
  subscriptions: async () => {
    if (state.me.is_staff) await loadUsers();
    await loadTags();
    await loadSubscriptions();
  },
  publish: loadTags,
  tags: loadTags,
  audit: async () => {
    await Promise.all([loadUsers(), loadKeys(), loadTags()]);
    await loadAudit(true);
  },
};

async function showView(name) {
  for (const button of $$(".tabs button")) {
    if (button.dataset.view === name) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  for (const view of $$(".view")) view.hidden = view.id !== `view-${name}`;
  if (name === "inbox") fitMessages(); // measured as 0 while hidden
  try {
    await viewLoaders[name]();
  } catch (err) {
    showError(err);
  }
}

async function start() {
  state.me = await api("GET", "/api/users/me/");
  $("#signin-view").hidden = true;
  $("#app-view").hidden = false;
  $("#session").hidden = false;
  $("#whoami").textContent = state.me.is_staff ? `${state.me.username} (staff)` : state.me.username;
  for (const node of $$("[data-staff]")) node.hidden = !state.me.is_staff;
  await loadTags();
  // Where the socket should resume: the newest item whatever the filter.
  const [counts, newest] = await Promise.all([
    api("GET", "/api/inbox/counts/"),
    api("GET", "/api/inbox/?limit=1"),
  ]);
  setCounts(counts);
  const last = newest.results[0];
  Object.assign(state, { lastSeen: last?.id ?? 0, lastPosition: last?.position ?? 0 });
  connect();
  await openInbox();
}

async function signIn(event) {
  event.preventDefault();
  const error = $("#signin-error");
  const username = $("#username").value.trim();
  const password = $("#password").value;
  if (!username || !password) {
    error.textContent = "Enter your username and password.";
    return;
  }
  error.textContent = "";
  try {
    const res = await fetch("/api/token/", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username, password }),
    });
    if (res.status === 401) {
      error.textContent = "Wrong username or password.";
      return;
    }
    if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => ({})));
    setTokens(await res.json());
    $("#password").value = "";
    await start();
    $("#main").focus();
  } catch (err) {
    error.textContent = err instanceof ApiError ? err.message : "The server cannot be reached.";
  }
}

function signOut(message) {
  state.tokens = null;
  sessionStorage.removeItem(TOKENS_KEY);
  clearTimeout(refreshTimer);
  dropSocket();
  socket.opened = false;
  Object.assign(state, { me: null, next: null, lastSeen: 0, lastPosition: 0, auditNext: null });
  state.items.clear();
  $("#inbox-list").replaceChildren();
  setCounts({ unseen: 0, unread: 0, total: 0, archived: 0 });
  $("#app-view").hidden = true;
  $("#session").hidden = true;
  $("#signin-view").hidden = false;
  $("#signin-error").textContent = message ?? "";
  $("#username").focus();
}

function wire() {
  $("#signin-form").addEventListener("submit", signIn);
  $("#sign-out").addEventListener("click", () => {
    // Revoke the refresh token too (best effort): signing out ends the session.
    const refresh = state.tokens?.refresh;
    if (refresh) {
      fetch("/api/token/blacklist/", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh }),
      }).catch(() => {});
    }
    signOut();
  });
  $("#retry").addEventListener("click", connect);
  $("#bell").addEventListener("click", () => showView("inbox"));
  $("#load-more").addEventListener("click", () => loadPage(false).catch(showError));
  for (const button of $$("#filter-status button")) {
    button.addEventListener("click", () => {
      state.filter.status = button.dataset.status;
      for (const other of $$("#filter-status button")) other.setAttribute("aria-pressed", String(other === button));
      $("[data-bulk=archive]").hidden = state.filter.status === "archived";
      $("[data-bulk=unarchive]").hidden = state.filter.status !== "archived";
      openInbox().catch(showError);
    });
  }
  $("#tag-choices").addEventListener("change", (e) => {
    const id = Number(e.target.value);
    if (e.target.checked) state.filter.tags.add(id);
    else state.filter.tags.delete(id);
    describeTagFilter();
    openInbox().catch(showError);
  });
  // The tag list floats over the inbox: a click elsewhere or Escape puts it away.
  document.addEventListener("click", (e) => {
    if (!$("#tag-filter").contains(e.target)) $("#tag-filter").open = false;
  });
  $("#tag-filter").addEventListener("keydown", (e) => {
    if (e.key !== "Escape") return;
    $("#tag-filter").open = false;
    $("#tag-filter summary").focus();
  });
  for (const button of $$("[data-bulk]")) button.addEventListener("click", () => bulk(button.dataset.bulk));
  for (const button of $$(".tabs button")) {
    button.addEventListener("click", () => showView(button.dataset.view));
  }
  $("#sub-form").addEventListener("submit", subscribe);
  $("#sub-user").addEventListener("change", () => loadSubscriptions().catch(showError));
  $("#publish-form").addEventListener("submit", publish);
  $("#tag-form").addEventListener("submit", createTag);
  $("#audit-resource").addEventListener("change", () => loadAudit(true));
  $("#audit-refresh").addEventListener("click", () => loadAudit(true));
  $("#audit-more").addEventListener("click", () => loadAudit(false));
  window.addEventListener("resize", fitMessages);
  // Back online: do not wait for the backoff timer.
  window.addEventListener("online", () => {
    if (state.tokens && !socket.ws) connect();
  });
}

wire();
const saved = sessionStorage.getItem(TOKENS_KEY);
if (saved) {
  try {
    setTokens(JSON.parse(saved));
    await start();
  } catch {
    signOut();
  }
} else {
  $("#username").focus();
}
