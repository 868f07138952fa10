// citelink's drop-in inbox: one ES module, no build step, nothing loaded from
// elsewhere. It exports
//
//   CitelinkClient   a headless client of the socket protocol citelink.v1
//                    (connect, events, resume, list, read/unread/seen/archive,
//                    interact, counts), for teams that draw their own UI;
//   CitelinkInbox    the <citelink-inbox> element built on it: a bell with the
//                    unseen badge and a panel with the live list.
//
//   <script type="module" src="https://citelink.example/embed/citelink-inbox.js"></script>
//   <citelink-inbox server="https://citelink.example" token-provider="getCitelinkToken">
//   </citelink-inbox>
//
// Everything goes over the one socket: no REST call, so no CORS set-up; a
// page of another origin needs it in CITELINK_CORS_ORIGINS (the socket's
// Origin check). Server data is only ever rendered as text (textContent),
// never as HTML; links must be http(s) or a /path and open with
// noopener noreferrer.

const PROTOCOL = "citelink.v1";
const SOCKET_PATH = "/ws/notifications/";
const PAGE_SIZE = 20;
const HEARTBEAT_MS = 25000; // no pong by the next beat: the link is dead
const MAX_BACKOFF_MS = 15000;
const TOKEN_REFUSED = 4401;

/** Expiry (ms since the epoch) of a JWT, read only to schedule its renewal. */
function expiryOf(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload)).exp * 1000;
  } catch {
    return 0;
  }
}

/**
 * A link an item may open, or null: http(s) with a host, or a path of the
 * host page's own that cannot become another host: no "//" at the start, no
 * backslash, no control character ("/\host" and "/<tab>/host" are "//host"
 * to a browser). The API's rule (_link_problem in citelink/api/notifications.py),
 * checked again for what plain SQL wrote.
 */
export function safeLink(value) {
  if (typeof value !== "string" || value.length < 1 || value.length > 2000) return null;
  if (/[\u0000-\u001f\u007f-\u009f\\]/.test(value) || value.startsWith(" ") || value.endsWith(" ")) {
    return null;
  }
  if (value.startsWith("/")) return value.startsWith("//") ? null : value;
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

/**
 * The socket protocol, headless.
 *
 *   const client = new CitelinkClient({ server, token, tokenProvider });
 *   client.on("notification", (item) => ...);   // live and replayed items
 *   client.on("counts", ({ unseen, unread }) => ...);
 *   client.connect();
 *   const { data, next } = await client.list({ limit: 20 });
 *
 * Events: notification, read, unread, seen, unseen, archive, unarchive,
 * delete, expire, interact (each with the frame), counts, resumed, status
 * ("connecting" | "live" | "waiting" | "closed"), error (error frames),
 * reconnected (after a reconnect: state may have changed while away).
 * Reconnects with backoff and resumes after the newest item it saw, so no
 * item is lost or delivered twice.
 */
export class CitelinkClient {
  constructor({
    server,
    token = null,
    tokenProvider = null,
    WebSocketClass = globalThis.WebSocket,
  } = {}) {
    this.server = new URL(server ?? location.href);
    this.token = token;
    this.tokenProvider = tokenProvider;
    this.WebSocketClass = WebSocketClass;
    this.lastId = 0; // the newest item seen (by position): resume after it
    this.lastPosition = 0;
    this.status = "closed";
    this._handlers = new Map();
    this._pending = []; // notifications_list requests, answered in order
    this._ws = null;
    this._attempt = 0;
    this._opened = false;
    this._closed = true;
  }

  /** Subscribe to an event; returns the unsubscribe function. */
  on(event, handler) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(handler);
    return () => this._handlers.get(event)?.delete(handler);
  }

  _emit(event, value) {
    for (const handler of this._handlers.get(event) ?? []) {
      try {
        handler(value);
      } catch (err) {
        setTimeout(() => {
          throw err;
        });
      }
    }
  }

  _setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this._emit("status", status);
  }

  /** A fresh token from the provider (if any); the current one otherwise. */
  async refreshToken() {
    if (!this.tokenProvider) return this.token;
    try {
      const token = await this.tokenProvider();
      if (typeof token === "string" && token) this.setToken(token);
    } catch (err) {
      this._emit("error", { code: "token_provider", detail: String(err) });
    }
    return this.token;
  }

  /** Use `token` from now on; an open socket is told at once (`auth`). */
  setToken(token) {
    this.token = token;
    this._send({ type: "auth", token });
    this._scheduleRenewal();
  }

  _scheduleRenewal() {
    clearTimeout(this._renewal);
    if (!this.tokenProvider || !this.token) return;
    // A minute before expiry, or halfway through a short-lived token.
    const left = expiryOf(this.token) - Date.now();
    if (left <= 0) return;
    const wait = Math.max(1000, left - Math.min(60000, left / 2));
    this._renewal = setTimeout(() => this.refreshToken(), wait);
  }

  async connect() {
    this._closed = false;
    clearTimeout(this._retry);
    if (!this.token) await this.refreshToken();
    if (this._closed) return;
    if (!this.token) {
      this._emit("error", { code: "no_token", detail: "no token to connect with" });
      return;
    }
    this._setStatus("connecting");
    this._scheduleRenewal();
    const url = new URL(SOCKET_PATH, this.server);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("token", this.token);
    const ws = new this.WebSocketClass(url, [PROTOCOL]);
    this._ws = ws;
    ws.onopen = () => {
      const reconnected = this._opened;
      this._opened = true;
      this._setStatus("live");
      this._heartbeat(ws);
      // Every item committed since the newest one seen, in order, then live
      // (with none seen yet, there is nothing to resume from: list instead).
      if (reconnected && this.lastPosition > 0) this.resume(this.lastId);
      this.counts();
      if (reconnected) this._emit("reconnected");
    };
    ws.onmessage = (event) => {
      // The backoff is reset only once the server talks: a socket accepted
      // and closed at once (database down) must not spin.
      this._attempt = 0;
      this._answered = true;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this._onFrame(frame);
    };
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      this._ws = null;
      clearInterval(this._beat);
      for (const pending of this._pending.splice(0)) pending.reject(new Error("socket closed"));
      if (this._closed) return;
      if (event.code === TOKEN_REFUSED) {
        // Refused or expired: a fresh token first, if there is a provider.
        const stale = this.token;
        this.refreshToken().then((token) => {
          if (token && token !== stale) this._reconnectLater(0);
          else if (!this.tokenProvider) this._setStatus("closed");
          else this._reconnectLater();
        });
        return;
      }
      this._reconnectLater();
    };
  }

  /** Exponential backoff with jitter: a restarted server is not hit by every page at once. */
  _reconnectLater(delay) {
    const wait = delay ?? Math.min(MAX_BACKOFF_MS, 250 * 2 ** this._attempt) * (0.5 + Math.random() / 2);
    this._attempt += 1;
    this._setStatus("waiting");
    clearTimeout(this._retry);
    this._retry = setTimeout(() => this.connect(), wait);
  }

  _heartbeat(ws) {
    this._answered = true;
    clearInterval(this._beat);
    this._beat = setInterval(() => {
      if (!this._answered) {
        // Half-open (a laptop asleep): no close event will ever come.
        this._ws = null;
        ws.close();
        this._reconnectLater();
        return;
      }
      this._answered = false;
      this._send({ type: "ping" });
    }, HEARTBEAT_MS);
  }

  close() {
    this._closed = true;
    clearTimeout(this._retry);
    clearTimeout(this._renewal);
    clearInterval(this._beat);
    const ws = this._ws;
    this._ws = null;
    ws?.close(1000);
    this._setStatus("closed");
  }

  _send(frame) {
    if (this._ws?.readyState === 1) {
      this._ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  _onFrame(frame) {
    if (frame.type === "notification") {
      if (frame.position > this.lastPosition) {
        this.lastPosition = frame.position;
        this.lastId = frame.id;
      }
    } else if (frame.type === "notifications_list") {
      this._pending.shift()?.resolve(frame);
      this._see(frame.data ?? []);
      return;
    }
    this._emit(frame.type, frame);
  }

  _see(items) {
    // A list's newest item is a safe place to resume from once it is loaded.
    for (const item of items) {
      if (item.position > this.lastPosition) {
        this.lastPosition = item.position;
        this.lastId = item.id;
      }
    }
  }

  /** A page of the inbox, newest first: `{data, next}` (`next`: the `before` of the older page). */
  list({ before = null, limit = PAGE_SIZE, ...filters } = {}) {
    return new Promise((resolve, reject) => {
      if (!this._send({ type: "notifications_list", before, limit, ...filters })) {
        reject(new Error("not connected"));
        return;
      }
      this._pending.push({ resolve, reject });
    });
  }

  /** Replay every item after item `after` (an id; 0 for all), in order. */
  resume(after = this.lastId) {
    return this._send({ type: "resume", after });
  }

  counts() {
    return this._send({ type: "counts" });
  }

  read(id) {
    return this._send({ type: "read", id });
  }

  unread(id) {
    return this._send({ type: "unread", id });
  }

  seen(id) {
    return this._send({ type: "seen", id });
  }

  archive(id) {
    return this._send({ type: "archive", id });
  }

  unarchive(id) {
    return this._send({ type: "unarchive", id });
  }

  delete(id) {
    return this._send({ type: "delete", id });
  }

  /** A click on an item's link (no action) or on one of its actions (implies read). */
  interact(id, action = null) {
    return this._send(action === null ? { type: "interact", id } : { type: "interact", id, action });
  }

  readAll() {
    return this._send({ type: "read_all" });
  }

  seenAll() {
    return this._send({ type: "seen_all" });
  }
}

// The element ------------------------------------------------------------------

// Host-page CSS cannot reach into the shadow root, but it does style the host
// element and what it inherits: `all: initial` with !important (which wins
// over the page's !important for the host) resets both. Themable through
// custom properties, which `all` leaves alone.
const CSS = `
:host {
  all: initial !important;
  display: inline-block !important;
  position: relative !important;
  visibility: visible !important;
  opacity: 1 !important;
  font-family: var(--citelink-font, system-ui, sans-serif) !important;
  font-size: var(--citelink-font-size, 14px) !important;
  line-height: 1.4 !important;
  color: var(--citelink-text, #1f2328) !important;
}
:host([hidden]) { display: none !important; }
* { box-sizing: border-box; font: inherit; color: inherit; margin: 0; }
[hidden] { display: none !important; }
button {
  cursor: pointer; border: 1px solid var(--citelink-border, #d0d7de); border-radius: 6px;
  background: var(--citelink-button-bg, #f6f8fa); padding: 2px 8px; font-size: 0.85em;
}
button:focus-visible, a:focus-visible {
  outline: 2px solid var(--citelink-accent, #0969da); outline-offset: 2px;
}
/* An opaque face by default: the host's bar may be dark, or striped. */
.bell {
  position: relative; display: inline-flex; align-items: center; justify-content: center;
  width: 2.5em; height: 2.5em; border-radius: 50%; padding: 0;
  background: var(--citelink-bell-bg, #fff); box-shadow: 0 1px 3px rgba(0, 0, 0, 0.3);
}
.bell svg { width: 1.4em; height: 1.4em; fill: currentColor; display: block; }
.badge {
  position: absolute; top: -2px; right: -2px; min-width: 1.5em; height: 1.5em; padding: 0 4px;
  border-radius: 999px; background: var(--citelink-badge-bg, #cf222e);
  color: var(--citelink-badge-text, #fff); font-size: 0.75em; font-weight: 600;
  display: inline-flex; align-items: center; justify-content: center;
}
.panel {
  position: absolute; z-index: 2147483000; top: calc(100% + 6px);
  right: var(--citelink-panel-right, 0); width: var(--citelink-panel-width, 360px);
  max-height: var(--citelink-panel-height, 480px); display: flex; flex-direction: column;
  background: var(--citelink-bg, #fff); border: 1px solid var(--citelink-border, #d0d7de);
  border-radius: var(--citelink-radius, 10px); box-shadow: 0 8px 24px rgba(0, 0, 0, 0.15);
}
header { display: flex; align-items: center; gap: 8px; padding: 8px 12px;
  border-bottom: 1px solid var(--citelink-border, #d0d7de); }
h2 { font-size: 1em; font-weight: 600; flex: 1; }
.state { font-size: 0.8em; color: var(--citelink-muted, #656d76); padding: 4px 12px; }
ul { list-style: none; padding: 0; overflow-y: auto; flex: 1; }
li { display: block; padding: 8px 12px; border-bottom: 1px solid var(--citelink-border, #d0d7de); }
li.unread { background: var(--citelink-unread-bg, #ddf4ff); }
.meta { display: flex; gap: 8px; font-size: 0.75em; color: var(--citelink-muted, #656d76); }
.message { display: block; margin: 2px 0 6px; white-space: pre-wrap; overflow-wrap: anywhere; }
a.message { color: var(--citelink-accent, #0969da); }
.actions { display: flex; flex-wrap: wrap; gap: 6px; }
.actions .primary {
  background: var(--citelink-accent, #0969da); color: var(--citelink-accent-text, #fff);
  border-color: transparent;
}
.taken { font-size: 0.8em; color: var(--citelink-muted, #656d76); }
.empty { padding: 16px 12px; color: var(--citelink-muted, #656d76); }
.older { margin: 8px 12px; }
`;

const TEMPLATE = `
<button type="button" class="bell" part="bell" aria-haspopup="dialog" aria-expanded="false"
        aria-controls="panel">
  <svg viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path d="M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22Zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1Z"/></svg>
  <span class="badge" part="badge" hidden></span>
</button>
<div class="panel" id="panel" part="panel" role="dialog" aria-modal="false"
     aria-labelledby="title" hidden>
  <header>
    <h2 id="title">Notifications</h2>
    <button type="button" class="read-all">Mark all read</button>
    <button type="button" class="close" aria-label="Close notifications">✕</button>
  </header>
  <p class="state" role="status" aria-live="polite"></p>
  <ul class="list" aria-label="Notifications"></ul>
  <p class="empty" hidden>No notifications.</p>
  <button type="button" class="older" hidden>Load older</button>
</div>
`;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

const STATUS_TEXT = {
  connecting: "Connecting…",
  live: "",
  waiting: "Reconnecting…",
  closed: "Not connected",
};

/**
 * <citelink-inbox server="https://citelink.example" token="…" token-provider="fnName">
 *
 * Attributes: server (default: this page's origin), token (an access token:
 * citelink's or the platform's), token-provider (the name of a global
 * function returning a Promise of a fresh token). Property: tokenProvider
 * (the function itself); client (its CitelinkClient). Events (bubbling,
 * composed): citelink-notification {item}, citelink-unseen {count},
 * citelink-status {status}, citelink-action {id, action}.
 */
export class CitelinkInbox extends HTMLElement {
  static observedAttributes = ["token", "server", "token-provider"];

  constructor() {
    super();
    this._root = this.attachShadow({ mode: "open" });
    if ("adoptedStyleSheets" in this._root && globalThis.CSSStyleSheet?.prototype.replaceSync) {
      // A constructed sheet works under a host page's strict style-src too.
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
      this._root.adoptedStyleSheets = [sheet];
    } else {
      this._root.append(el("style", {}, CSS));
    }
    const template = document.createElement("template");
    template.innerHTML = TEMPLATE; // static markup only: no data ever goes through innerHTML
    this._root.append(template.content);
    const $ = (selector) => this._root.querySelector(selector);
    this._bell = $(".bell");
    this._badge = $(".badge");
    this._panel = $(".panel");
    this._list = $(".list");
    this._state = $(".state");
    this._empty = $(".empty");
    this._older = $(".older");
    this._items = new Map(); // id -> item, what the list shows
    this._next = null; // `before` of the next older page
    this._loaded = false;
    this._unseen = 0;
    this._provider = null;
    this._bell.addEventListener("click", () => this.toggle());
    $(".close").addEventListener("click", () => this.close(true));
    $(".read-all").addEventListener("click", () => this.client?.readAll());
    this._older.addEventListener("click", () => this._loadOlder());
    this._root.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !this._panel.hidden) {
        event.stopPropagation();
        this.close(true);
      }
    });
    this._renderBadge();
  }

  get tokenProvider() {
    if (this._provider) return this._provider;
    const name = this.getAttribute("token-provider");
    const fn = name ? globalThis[name] : null;
    return typeof fn === "function" ? fn : null;
  }

  set tokenProvider(fn) {
    this._provider = typeof fn === "function" ? fn : null;
    if (this.client) this.client.tokenProvider = this.tokenProvider;
    if (this.isConnected && !this.client) this._start();
  }

  connectedCallback() {
    this._start();
  }

  disconnectedCallback() {
    this.client?.close();
    this.client = null;
  }

  attributeChangedCallback(name, old, value) {
    if (!this.client || old === value) return;
    if (name === "token" && value) this.client.setToken(value);
    else if (name === "token-provider") this.client.tokenProvider = this.tokenProvider;
    else if (name === "server") {
      this.disconnectedCallback();
      this._start();
    }
  }

  _start() {
    if (this.client || (!this.getAttribute("token") && !this.tokenProvider)) return;
    const client = new CitelinkClient({
      server: this.getAttribute("server") || location.origin,
      token: this.getAttribute("token"),
      tokenProvider: this.tokenProvider,
    });
    this.client = client;
    client.on("status", (status) => {
      this._state.textContent = STATUS_TEXT[status] ?? "";
      this._fire("citelink-status", { status });
      if (status === "live" && !this._loaded) this._loadFirst();
    });
    client.on("reconnected", () => this._loadFirst());
    client.on("notification", (frame) => this._receive(frame));
    client.on("counts", (frame) => this._setUnseen(frame.unseen ?? frame.unread ?? 0));
    for (const kind of ["read", "unread"]) {
      client.on(kind, ({ id }) => this._update(id, { is_read: kind === "read", is_seen: true }));
    }
    client.on("seen", ({ id }) => this._update(id, { is_seen: true }));
    client.on("interact", ({ id, action }) => {
      this._update(id, { is_read: true, is_seen: true, action });
    });
    for (const gone of ["archive", "delete", "expire"]) client.on(gone, ({ id }) => this._forget(id));
    client.on("error", (frame) => {
      this._state.textContent = frame.detail ?? "The server refused a request.";
    });
    client.connect();
  }

  _fire(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail, bubbles: true, composed: true }));
  }

  // Panel ------------------------------------------------------------------------

  get open() {
    return !this._panel.hidden;
  }

  toggle() {
    if (this.open) this.close(true);
    else this.show();
  }

  show() {
    this._panel.hidden = false;
    this._bell.setAttribute("aria-expanded", "true");
    // Opening the panel is seeing what it lists.
    if (this._unseen > 0) this.client?.seenAll();
    (this._list.querySelector("button, a") ?? this._panel.querySelector(".close")).focus();
  }

  close(returnFocus = false) {
    this._panel.hidden = true;
    this._bell.setAttribute("aria-expanded", "false");
    if (returnFocus) this._bell.focus();
  }

  _setUnseen(count) {
    this._unseen = count;
    this._renderBadge();
    this._fire("citelink-unseen", { count });
  }

  _renderBadge() {
    const count = this._unseen;
    this._badge.textContent = count > 99 ? "99+" : String(count);
    this._badge.hidden = count === 0;
    this._bell.setAttribute("aria-label", count ? `Notifications, ${count} unseen` : "Notifications");
  }

  // List -------------------------------------------------------------------------

  async _loadFirst() {
    try {
      const page = await this.client.list({ limit: PAGE_SIZE });
      const listed = [...(page.pinned ?? []), ...page.data];
      // After a reconnect: rows of the page's range that it no longer holds
      // were archived or deleted meanwhile; the others are shown as they are now.
      const fresh = new Set(listed.map((i) => i.id));
      const floor = page.next === null ? -Infinity : Math.min(...page.data.map((i) => i.position));
      for (const [id, item] of [...this._items]) {
        if (!fresh.has(id) && item.position >= floor) this._forget(id);
      }
      for (const item of listed) this._show(item);
      // Older pages from here down: rows already shown come again and are
      // merged, and whatever came while away between them is filled in.
      this._next = page.next;
      this._loaded = true;
      this._renderEmpty();
    } catch {
      // The socket closed meanwhile: the reconnect loads again.
    }
  }

  async _loadOlder() {
    if (this._next === null) return;
    try {
      const page = await this.client.list({ before: this._next, limit: PAGE_SIZE });
      for (const item of page.data) this._show(item);
      this._next = page.next;
      this._renderEmpty();
    } catch {
      // not connected: the button stays for another try
    }
  }

  _receive(frame) {
    const item = { ...frame };
    delete item.type;
    const isNew = !this._items.has(item.id);
    this._show(item);
    this._renderEmpty();
    if (!isNew) return;
    this._fire("citelink-notification", { item });
    // Arriving in an open panel is being seen.
    if (this.open && !item.is_seen) this.client?.seen(item.id);
  }

  _show(item) {
    const known = this._items.get(item.id);
    if (known) {
      Object.assign(known, item);
      this._paint(known);
      return;
    }
    this._items.set(item.id, item);
    const row = el("li", { "data-id": item.id, "data-position": item.position });
    const rows = Array.from(this._list.children);
    const older = rows.find((r) => Number(r.dataset.position) < item.position);
    this._list.insertBefore(row, older ?? null);
    this._paint(item);
  }

  _update(id, fields) {
    const item = this._items.get(id);
    if (!item) return;
    Object.assign(item, fields);
    this._paint(item);
  }

  _forget(id) {
    this._items.delete(id);
    const row = this._rowOf(id);
    if (!row) return;
    const hadFocus = this._root.activeElement && row.contains(this._root.activeElement);
    const neighbour = row.nextElementSibling ?? row.previousElementSibling;
    row.remove();
    if (hadFocus) (neighbour?.querySelector("button, a") ?? this._panel.querySelector(".close")).focus();
    this._renderEmpty();
  }

  _rowOf(id) {
    return this._list.querySelector(`li[data-id="${Number(id)}"]`);
  }

  _renderEmpty() {
    this._empty.hidden = this._items.size > 0 || !this._loaded;
    this._older.hidden = this._next === null;
  }

  /** (Re)draw one row, as text only. */
  _paint(item) {
    const row = this._rowOf(item.id);
    if (!row) return;
    const focused = this._root.activeElement;
    const focusKey = focused && row.contains(focused) ? focused.dataset.key : null;
    row.className = item.is_read ? "read" : "unread";
    const data = item.data && typeof item.data === "object" ? item.data : {};
    const link = safeLink(data.url);
    const when = item.timestamp ? new Date(item.timestamp) : null;
    const message = link
      ? el(
          "a",
          {
            class: "message",
            href: link,
            target: "_blank",
            rel: "noopener noreferrer",
            "data-key": "link",
            onclick: () => this.client?.interact(item.id),
          },
          item.message,
        )
      : el("p", { class: "message" }, item.message);
    const label = String(item.message).slice(0, 80);
    const actions = el("div", { class: "actions" });
    const offered = Array.isArray(data.actions)
      ? data.actions.filter((a) => a && typeof a.id === "string")
      : [];
    if (item.action) {
      const taken = offered.find((a) => a.id === item.action);
      actions.append(el("span", { class: "taken" }, `✓ ${taken?.label ?? item.action}`));
    } else {
      for (const [n, action] of offered.entries()) {
        actions.append(
          el(
            "button",
            {
              type: "button",
              class: n === 0 ? "primary" : null,
              "data-key": `action:${action.id}`,
              onclick: () => this._act(item, action),
            },
            String(action.label ?? action.id),
          ),
        );
      }
    }
    const toggleText = item.is_read ? "Mark unread" : "Mark read";
    actions.append(
      el(
        "button",
        {
          type: "button",
          class: "toggle",
          "data-key": "toggle",
          "aria-label": `${toggleText}: ${label}`,
          onclick: () => (item.is_read ? this.client?.unread(item.id) : this.client?.read(item.id)),
        },
        toggleText,
      ),
      el(
        "button",
        {
          type: "button",
          class: "archive",
          "data-key": "archive",
          "aria-label": `Archive: ${label}`,
          onclick: () => this.client?.archive(item.id),
        },
        "Archive",
      ),
    );
    row.replaceChildren(
      el(
        "div",
        { class: "meta" },
        item.tag_name ? el("span", { class: "tag" }, item.tag_name) : null,
        when ? el("time", { datetime: item.timestamp }, when.toLocaleString()) : null,
        el("span", { class: "status" }, item.is_read ? "Read" : "Unread"),
      ),
      message,
      actions,
    );
    if (focusKey) row.querySelector(`[data-key="${CSS_ESCAPE(focusKey)}"]`)?.focus();
  }

  _act(item, action) {
    this.client?.interact(item.id, action.id);
    this._fire("citelink-action", { id: item.id, action: action.id });
    const link = safeLink(action.url);
    if (link) window.open(link, "_blank", "noopener,noreferrer");
  }
}

const CSS_ESCAPE = (text) =>
  globalThis.CSS?.escape ? globalThis.CSS.escape(text) : text.replace(/["\\]/g, "\\$&");

if (!customElements.get("citelink-inbox")) customElements.define("citelink-inbox", CitelinkInbox);
