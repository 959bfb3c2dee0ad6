// clarion.js: browser client of Clarion's realtime gateway and inbox API.
// A plain ES module (no build step). Protocol: docs/gateway-protocol.md.
//
//   import { ClarionClient } from "./clarion.js";
//   const client = new ClarionClient({ gatewayUrl, apiBase: "", getToken: async () => token });
//   client.addEventListener("notification", (e) => render(e.detail.notification));
//   client.addEventListener("unread", (e) => setBadge(e.detail.count));
//   client.addEventListener("refetch", (e) => replaceInbox(e.detail.items));
//   client.start();
//
// Events (CustomEvent, payload in `detail`):
//   state        {state: "connecting" | "open" | "closed" | "stopped", code?, reason?}
//   connected    the server's `connected` frame
//   notification {kind: "created" | "updated", notification, offset}
//   read | unread_state | deleted   {ids, offset}: read-state changes made elsewhere
//   all_read     {offset}
//   unread       {count}: the unread count changed (from any frame or a refetch)
//   refetch      {items, next_cursor, counts, sinceFrame}: the inbox was reloaded over REST
//                because the gateway could not replay what was missed (`recovered: false`);
//                live notifications with `frame > sinceFrame` may be newer than the page
//   notification events carry `frame`, the count of stream frames received so far
//   error        {error}
//
// Text in notifications is untrusted: render it with textContent, never as HTML.

const STREAM_TYPES = new Set([
  "notification.created",
  "notification.updated",
  "notification.read",
  "notification.unread",
  "notification.deleted",
  "notifications.all_read",
]);

// Backoff of per-notification actions answered 404 (see `_api`), about 6 s in all.
const NOT_FOUND_RETRY_MS = [50, 100, 200, 400, 800, 1600, 3200];

// Close codes after which reconnecting cannot help.
const FATAL_CODES = new Set([4003, 1009]);
const BAD_TOKEN = 4001;

export class ClarionClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} options.gatewayUrl  ws(s)://host:port/v1/ws
   * @param {string} [options.apiBase]   base URL of ingest-api ("" = same origin)
   * @param {() => Promise<string>|string} options.getToken  a fresh JWT for each attempt
   * @param {number} [options.minDelayMs]  first backoff step (default 500 ms)
   * @param {number} [options.maxDelayMs]  backoff cap (default 30 s)
   * @param {number} [options.pingMs]      application ping period (default 25 s)
   */
  constructor({ gatewayUrl, apiBase = "", getToken, minDelayMs = 500, maxDelayMs = 30000, pingMs = 25000 }) {
    super();
    this.gatewayUrl = gatewayUrl;
    this.apiBase = apiBase;
    this.getToken = getToken;
    this.minDelayMs = minDelayMs;
    this.maxDelayMs = maxDelayMs;
    this.pingMs = pingMs;
    this.offset = null; // last stream offset seen, "epoch:seq"
    this.lastConnected = null; // the last `connected` frame (session, recovered, missed)
    this.connects = 0;
    this.frames = 0; // stream frames received, so an app can tell what a refetch predates
    this.unreadCount = 0;
    this.state = "closed";
    this._ws = null;
    this._attempt = 0;
    this._badTokens = 0;
    this._stopped = true;
    this._timer = null;
    this._pinger = null;
  }

  /** Connect, and keep reconnecting (exponential backoff with full jitter) until stop(). */
  start() {
    this._stopped = false;
    this._open();
  }

  /** Close and stop reconnecting. */
  stop() {
    this._stopped = true;
    clearTimeout(this._timer);
    clearInterval(this._pinger);
    if (this._ws) this._ws.close(1000, "bye");
    this._setState("stopped");
  }

  /** Drop the current connection and reconnect at once with the last offset (for tests and "retry now"). */
  reconnectNow() {
    clearTimeout(this._timer);
    if (this._ws) this._ws.close(1000, "reconnect");
    else this._open();
  }

  // ------------------------------------------------------------------ REST (ingest-api)

  async _api(path, { method = "GET", body, retryNotFound = false } = {}) {
    // The gateway and the inbox read model consume `notifications` independently, so a
    // notification can reach the page a moment before the inbox stores it: an action on
    // it answers 404 until then. Such actions retry on 404 for about six seconds.
    const delays = retryNotFound ? NOT_FOUND_RETRY_MS : [];
    for (let attempt = 0; ; attempt++) {
      try {
        return await this._request(path, method, body);
      } catch (error) {
        if (error.status !== 404 || attempt >= delays.length) throw error;
        await new Promise((resolve) => setTimeout(resolve, delays[attempt]));
      }
    }
  }

  async _request(path, method, body) {
    const token = await this.getToken();
    const headers = { Authorization: `Bearer ${token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(this.apiBase + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!res.ok) {
      let detail = res.statusText;
      try {
        const problem = await res.json(); // RFC 9457 problem+json
        detail = problem.detail || problem.title || detail;
      } catch (_) { /* not JSON */ }
      const error = new Error(`${method} ${path}: ${res.status} ${detail}`);
      error.status = res.status;
      throw error;
    }
    return res.status === 204 ? null : res.json();
  }

  /** One page of the inbox, newest first: {items, next_cursor}. */
  listNotifications({ cursor = null, limit = 50, unread = null } = {}) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (cursor) q.set("cursor", cursor);
    if (unread !== null) q.set("unread", String(unread));
    return this._api(`/v1/me/notifications?${q}`);
  }

  /** {unread, total, categories}. */
  counts() {
    return this._api("/v1/me/notifications/counts");
  }

  markRead(id) {
    return this._api(`/v1/me/notifications/${encodeURIComponent(id)}/read`, {
      method: "POST",
      retryNotFound: true,
    });
  }

  markUnread(id) {
    return this._api(`/v1/me/notifications/${encodeURIComponent(id)}/unread`, {
      method: "POST",
      retryNotFound: true,
    });
  }

  markAllRead() {
    return this._api("/v1/me/notifications:read-all", { method: "POST" });
  }

  getPreferences() {
    return this._api("/v1/me/preferences");
  }

  putPreferences(preferences) {
    return this._api("/v1/me/preferences", { method: "PUT", body: preferences });
  }

  /** Reload the first inbox page and the counts, then emit `refetch` and `unread`. */
  async refetch() {
    const sinceFrame = this.frames;
    const [page, counts] = await Promise.all([this.listNotifications(), this.counts()]);
    this._emit("refetch", { items: page.items, next_cursor: page.next_cursor, counts, sinceFrame });
    // A frame that arrived meanwhile carries a newer count than this response.
    if (this.frames === sinceFrame) this._setUnread(counts.unread);
    return page;
  }

  // ------------------------------------------------------------------ WebSocket

  async _open() {
    if (this._stopped) return;
    this._setState("connecting");
    let token;
    try {
      token = await this.getToken();
    } catch (error) {
      this._emit("error", { error });
      this._scheduleReconnect();
      return;
    }
    const ws = new WebSocket(this.gatewayUrl);
    this._ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "connect", token, since: this.offset }));
    };
    ws.onmessage = (event) => this._onFrame(event.data);
    ws.onerror = () => { /* onclose follows with the code */ };
    ws.onclose = (event) => this._onClose(ws, event);
  }

  _onClose(ws, event) {
    if (this._ws !== ws) return;
    this._ws = null;
    clearInterval(this._pinger);
    this._setState("closed", { code: event.code, reason: event.reason });
    if (this._stopped) return;
    if (FATAL_CODES.has(event.code)) {
      this._emit("error", { error: new Error(`gateway closed: ${event.code} ${event.reason}`) });
      this._stopped = true;
      return;
    }
    if (event.code === BAD_TOKEN) {
      // getToken() is asked again; twice in a row bad means it cannot give a valid one.
      this._badTokens += 1;
      if (this._badTokens >= 2) {
        this._emit("error", { error: new Error(`token refused: ${event.reason}`) });
        this._stopped = true;
        return;
      }
    }
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    const cap = Math.min(this.maxDelayMs, this.minDelayMs * 2 ** this._attempt);
    const delay = Math.random() * cap; // full jitter
    this._attempt += 1;
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._open(), delay);
  }

  _onFrame(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch (error) {
      this._emit("error", { error });
      return;
    }
    if (frame.type === "connected") {
      this._attempt = 0;
      this._badTokens = 0;
      this.connects += 1;
      this.lastConnected = frame;
      this.offset = frame.offset;
      this._setState("open");
      this._emit("connected", frame);
      this._setUnread(frame.unread_count);
      clearInterval(this._pinger);
      this._pinger = setInterval(() => {
        if (this._ws && this._ws.readyState === WebSocket.OPEN) {
          this._ws.send('{"type":"ping"}');
        }
      }, this.pingMs);
      if (!frame.recovered) {
        this.refetch().catch((error) => this._emit("error", { error }));
      }
      return;
    }
    if (STREAM_TYPES.has(frame.type)) {
      this.offset = frame.offset;
      this.frames += 1;
      const offset = frame.offset;
      switch (frame.type) {
        case "notification.created":
        case "notification.updated":
          this._emit("notification", {
            kind: frame.type === "notification.created" ? "created" : "updated",
            notification: frame.notification,
            offset,
            frame: this.frames,
          });
          break;
        case "notification.read":
          this._emit("read", { ids: frame.notification_ids, offset });
          break;
        case "notification.unread":
          this._emit("unread_state", { ids: frame.notification_ids, offset });
          break;
        case "notification.deleted":
          this._emit("deleted", { ids: frame.notification_ids, offset });
          break;
        case "notifications.all_read":
          this._emit("all_read", { offset });
          break;
      }
      this._setUnread(frame.unread_count);
      return;
    }
    if (frame.type === "unread_count") {
      this._setUnread(frame.unread_count);
    }
    // "pong" and frame types added later are ignored.
  }

  _setUnread(count) {
    if (typeof count !== "number") return;
    this.unreadCount = count;
    this._emit("unread", { count });
  }

  _setState(state, extra = {}) {
    this.state = state;
    this._emit("state", { state, ...extra });
  }

  _emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }
}
