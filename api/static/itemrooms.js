// itemrooms.js: a dependency-free client for itemrooms' WebSocket rooms (protocol v1).
//
//   import { connect } from "/static/itemrooms.js";
//   const room = connect({ baseUrl: "wss://rooms.example.com", itemId: "42",
//                          token: () => fetch("/my-token").then((r) => r.text()) });
//   room.on("message", (m) => console.log(m.seq, m.sender.user, m.data));
//   room.on("status", (s) => console.log(s.state, s.code, s.reason));
//   await room.publish({ text: "hi" });   // resolves with your message, as the room saw it
//
// What it does for you: the token goes in the subprotocol list (never in the URL);
// reconnects with exponential backoff and full jitter; resumes with `?since=<last seq>`
// and drops duplicates, so `message` events have no gaps and no repeats; refreshes the
// token before it expires; pings while the page is visible and treats a missing pong
// as a dead connection; stops for good on close reasons no retry can fix.

/** Close reasons after which reconnecting cannot help: the room stops and says why. */
export const FATAL_REASONS = new Set([
  "missing_token",
  "invalid_token",
  "forbidden",
  "origin_not_allowed",
  "invalid_item_id",
  "invalid_since",
  "invalid_request",
  "item_closed",
]);

const SUBPROTOCOL = "itemrooms.v1";
// setTimeout fires at once for longer delays (about 24.8 days).
const MAX_TIMER_MS = 2 ** 31 - 1;

const DEFAULTS = {
  /** First backoff step; attempt n waits a random time in [0, min(maxDelayMs, baseDelayMs * 2^n)]. */
  baseDelayMs: 500,
  maxDelayMs: 30_000,
  /** App-level ping period while the page is visible, and how long to wait for its pong. */
  pingIntervalMs: 20_000,
  pongTimeoutMs: 10_000,
  /** How long a connection may take to be welcomed before it is given up and retried. */
  openTimeoutMs: 10_000,
  /** Refresh this long before `exp`, or 10% of the token's lifetime if that is longer,
   * but never in the first half of its lifetime. */
  refreshLeadMs: 30_000,
};

/**
 * @typedef {object} ConnectOptions
 * @property {string} [url] the room's full WebSocket URL (`wss://host/items/42/ws`)
 * @property {string} [baseUrl] or a base (`wss://host`, `https://host`; default: this page's origin) ...
 * @property {string} [itemId] ... and the item id
 * @property {string | (() => string | Promise<string>)} token the token, or a function asked
 *   for one at every (re)connect and before the current one expires
 * @property {number} [since] resume after this seq (e.g. one the app stored); default: from now on
 * @property {number} [baseDelayMs] @property {number} [maxDelayMs]
 * @property {number} [pingIntervalMs] @property {number} [pongTimeoutMs]
 * @property {number} [openTimeoutMs] @property {number} [refreshLeadMs]
 * @property {typeof WebSocket} [WebSocket] a WebSocket implementation (default: the global one)
 */

/**
 * Join a room; the returned {@link Room} connects at once and keeps itself connected.
 * @param {ConnectOptions} options
 * @returns {Room}
 */
export function connect(options) {
  return new Room(options);
}

/** An error frame from the server, or a publish that could not be acknowledged. */
export class RoomError extends Error {
  /** @param {string} code e.g. `not_allowed`, `rate_limited`, `unavailable`, `not_connected`, `closed` */
  constructor(code, detail) {
    super(`${code}: ${detail}`);
    this.name = "RoomError";
    this.code = code;
    this.detail = detail;
  }
}

/**
 * One item's room. Events (`room.on(type, handler)` or `addEventListener`, detail in
 * `event.detail`):
 * - `welcome`: each (re)connection's welcome frame
 * - `message`: a message frame, each seq once and in order
 * - `presence`: a join or leave of someone else; `members`: the member list changed
 * - `status`: `{state, code, reason, attempt, delayMs}`, state one of `connecting`,
 *   `open`, `reconnecting`, `closed` (final: a fatal reason, or `close()`)
 * - `close`: every socket close `{code, reason, willRetry}`
 * - `error`: error frames not answered through a publish promise, and token source failures
 * - `refreshed`: the server accepted a refreshed token `{exp}`
 * - `binary`: a binary frame relayed from another member (an ArrayBuffer)
 */
export class Room extends EventTarget {
  /** @param {ConnectOptions} options */
  constructor(options) {
    super();
    this.options = { ...DEFAULTS, ...options };
    const { token } = this.options;
    /** @type {() => string | Promise<string>} */
    this._tokenSource = typeof token === "function" ? token : () => token;
    this._url = roomUrl(this.options);
    /** The last seq delivered to the app (null until the first welcome, unless `since` given). */
    this.seq = options.since ?? null;
    /** @type {"connecting" | "open" | "reconnecting" | "closed"} */
    this.state = "connecting";
    /** Who and where this connection is, from the last welcome. */
    this.itemId = options.itemId ?? null;
    this.clientId = null;
    this.user = null;
    this._members = new Map();
    this._pending = new Map(); // ref -> {resolve, reject}
    this._refs = 0;
    this._attempt = 0;
    this._ws = null;
    this._timers = {};
    this._claims = null; // the current token's, decoded (unverified) to know when to refresh
    this._nextClaims = null; // those of a refresh sent, until `refreshed`
    this._onVisible = () => this._visible() && this._ping();
    this._onOnline = () => this.state === "reconnecting" && this._reconnectNow();
    globalThis.document?.addEventListener?.("visibilitychange", this._onVisible);
    globalThis.addEventListener?.("online", this._onOnline);
    // Start once the caller has had a chance to subscribe.
    queueMicrotask(() => {
      if (this.state === "closed") return;
      this._status({ state: "connecting" });
      this._open();
    });
  }

  /** The other members: `[{user, client_id}]`. */
  get members() {
    return [...this._members.values()];
  }

  /**
   * Subscribe to an event; returns a function that unsubscribes.
   * @param {string} type @param {(detail: any) => void} handler @returns {() => void}
   */
  on(type, handler) {
    const listener = (event) => handler(event.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /**
   * Publish `data` (any JSON). Resolves with the message frame once the room has it
   * (its `ref` came back); rejects with a {@link RoomError} on an error frame for it
   * (`not_allowed`, `rate_limited`, `unavailable`, ...), when not connected
   * (`not_connected`), or when the connection closes first (`closed`: it may or may
   * not have been published).
   * @param {any} data @returns {Promise<object>}
   */
  publish(data) {
    if (this.state !== "open") {
      return Promise.reject(new RoomError("not_connected", `the room is ${this.state}`));
    }
    const ref = `r${++this._refs}`;
    return new Promise((resolve, reject) => {
      this._pending.set(ref, { resolve, reject });
      this._send({ type: "publish", data, ref });
    });
  }

  /** Send a binary frame to the other members (not stored, not sequenced). */
  sendBinary(bytes) {
    if (this.state !== "open") throw new RoomError("not_connected", `the room is ${this.state}`);
    this._ws.send(bytes);
  }

  /** Leave the room for good. */
  close() {
    if (this.state === "closed") return;
    const ws = this._detach();
    ws?.close(1000);
    this._closed({ code: 1000, reason: "closed_by_client", wasClean: true }, false);
    this._status({ state: "closed", code: 1000, reason: "closed_by_client" });
  }

  // -- connecting ------------------------------------------------------------------

  async _open() {
    let token;
    try {
      token = await this._tokenSource();
    } catch (err) {
      if (this.state === "closed") return;
      this._emit("error", new RoomError("token_source_failed", String(err?.message ?? err)));
      this._retry({ code: 4000, reason: "token_source_failed" });
      return;
    }
    if (this.state === "closed") return;
    this._claims = jwtClaims(token);
    this._nextClaims = null;
    const url = new URL(this._url);
    if (this.seq !== null) url.searchParams.set("since", String(this.seq));
    const Impl = this.options.WebSocket ?? globalThis.WebSocket;
    let ws;
    try {
      ws = new Impl(url.toString(), token ? [SUBPROTOCOL, `bearer.${token}`] : [SUBPROTOCOL]);
    } catch (err) {
      // A token with characters a subprotocol cannot carry, say: no retry can fix it.
      this._emit("error", new RoomError("connect_failed", String(err?.message ?? err)));
      this._closed({ code: 4000, reason: "connect_failed", wasClean: false }, false);
      this._status({ state: "closed", code: 4000, reason: "connect_failed" });
      return;
    }
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    ws.onmessage = (e) => this._onData(e.data);
    ws.onclose = (e) => this._onClose({ code: e.code, reason: e.reason, wasClean: e.wasClean });
    this._timer("open", this.options.openTimeoutMs, () => this._drop("open_timeout"));
  }

  _onClose(event) {
    this._detach();
    this._retry(event);
  }

  /** Give up on a connection the client considers dead; reconnect. */
  _drop(reason) {
    const ws = this._detach();
    try {
      ws?.close(4000, reason);
    } catch {
      // a socket still connecting may refuse; it is detached either way
    }
    this._retry({ code: 4000, reason, wasClean: false });
  }

  /** After a close: stop for good on a fatal reason, otherwise reconnect with backoff. */
  _retry(event) {
    const fatal = FATAL_REASONS.has(event.reason);
    this._closed(event, !fatal);
    if (fatal) {
      this._status({ state: "closed", code: event.code, reason: event.reason });
      return;
    }
    const cap = Math.min(this.options.maxDelayMs, this.options.baseDelayMs * 2 ** this._attempt);
    const delayMs = Math.round(Math.random() * cap); // full jitter
    this._attempt += 1;
    this._status({ state: "reconnecting", code: event.code, reason: event.reason,
      attempt: this._attempt, delayMs });
    this._timer("reconnect", delayMs, () => this._open());
  }

  _reconnectNow() {
    if (!this._timers.reconnect) return; // already connecting
    this._clear("reconnect");
    this._open();
  }

  /** Forget the current socket: its handlers, timers and pending publishes. */
  _detach() {
    const ws = this._ws;
    if (ws) ws.onmessage = ws.onclose = null;
    this._ws = null;
    for (const name of Object.keys(this._timers)) this._clear(name);
    return ws;
  }

  /** A connection ended: reject its publishes, forget its members, tell the app. */
  _closed(event, willRetry) {
    for (const { reject } of this._pending.values()) {
      reject(new RoomError("closed", `connection closed (${event.code} ${event.reason})`));
    }
    this._pending.clear();
    if (this._members.size) {
      this._members.clear();
      this._emit("members", this.members);
    }
    this._emit("close", { ...event, willRetry });
    if (!willRetry) {
      globalThis.document?.removeEventListener?.("visibilitychange", this._onVisible);
      globalThis.removeEventListener?.("online", this._onOnline);
    }
  }

  // -- frames ----------------------------------------------------------------------

  _onData(data) {
    if (typeof data !== "string") {
      this._emit("binary", data);
      return;
    }
    const frame = JSON.parse(data);
    switch (frame.type) {
      case "welcome":
        return this._onWelcome(frame);
      case "message":
        return this._onMessage(frame);
      case "presence":
        if (frame.event === "join") this._members.set(frame.client_id, memberOf(frame));
        else this._members.delete(frame.client_id);
        this._emit("presence", frame);
        this._emit("members", this.members);
        return;
      case "pong":
        return this._clear("pong");
      case "refreshed":
        this._claims = { ...this._claims, ...this._nextClaims, exp: frame.exp };
        this._nextClaims = null;
        this._scheduleRefresh();
        return this._emit("refreshed", frame);
      case "error":
        return this._onError(frame);
    }
  }

  _onWelcome(frame) {
    this._clear("open");
    this._attempt = 0;
    this.itemId = frame.item_id;
    this.clientId = frame.client_id;
    this.user = frame.user;
    // The room's seq went backwards (it lost its history): everything it replays is new.
    const reset = this.seq !== null && frame.seq < this.seq;
    if (this.seq === null || reset) this.seq = reset ? 0 : frame.seq;
    this._members = new Map(frame.members.map((m) => [m.client_id, memberOf(m)]));
    this.state = "open";
    this._emit("welcome", frame);
    this._emit("members", this.members);
    this._status({ state: "open", recovered: frame.recovered, reset });
    this._timer("ping", this.options.pingIntervalMs, () => this._ping(), true);
    this._scheduleRefresh();
  }

  _onMessage(frame) {
    if (this.seq !== null && frame.seq <= this.seq) return; // seen before this reconnect
    this.seq = frame.seq;
    const pending = frame.ref === undefined ? undefined : this._pending.get(frame.ref);
    this._pending.delete(frame.ref);
    this._emit("message", frame);
    pending?.resolve(frame);
  }

  _onError(frame) {
    const pending = frame.ref === undefined ? undefined : this._pending.get(frame.ref);
    if (pending) {
      this._pending.delete(frame.ref);
      pending.reject(new RoomError(frame.code, frame.detail));
      return;
    }
    if (frame.code === "invalid_refresh") this._retryRefresh();
    this._emit("error", new RoomError(frame.code, frame.detail));
  }

  // -- liveness --------------------------------------------------------------------

  _visible() {
    return (globalThis.document?.visibilityState ?? "visible") === "visible";
  }

  _ping() {
    if (this.state !== "open" || !this._visible() || this._timers.pong) return;
    this._send({ type: "ping" });
    this._timer("pong", this.options.pongTimeoutMs, () => this._drop("ping_timeout"));
  }

  // -- token refresh ---------------------------------------------------------------

  _scheduleRefresh() {
    this._clear("refresh");
    const { exp, iat } = this._claims ?? {};
    if (typeof exp !== "number") return; // not a JWT we can read: the server will say token_expired
    const expMs = exp * 1000;
    const lifeMs = typeof iat === "number" ? expMs - iat * 1000 : expMs - Date.now();
    const leadMs = Math.min(Math.max(this.options.refreshLeadMs, lifeMs / 10), lifeMs / 2);
    this._timer("refresh", expMs - leadMs - Date.now(), () => this._refresh());
  }

  async _refresh() {
    const ws = this._ws;
    let token;
    try {
      token = await this._tokenSource();
    } catch (err) {
      if (ws !== this._ws) return;
      this._emit("error", new RoomError("token_source_failed", String(err?.message ?? err)));
      return this._retryRefresh();
    }
    if (ws !== this._ws || this.state !== "open") return;
    const claims = jwtClaims(token);
    if (!claims || !(claims.exp > this._claims.exp)) return this._retryRefresh(); // not newer yet
    this._nextClaims = claims;
    this._send({ type: "refresh", token });
  }

  /** The token source had nothing newer: ask again halfway to expiry, while there is time. */
  _retryRefresh() {
    if (typeof this._claims?.exp !== "number") return;
    const leftMs = this._claims.exp * 1000 - Date.now();
    if (leftMs > 2000) this._timer("refresh", leftMs / 2, () => this._refresh());
  }

  // -- plumbing --------------------------------------------------------------------

  _send(frame) {
    this._ws.send(JSON.stringify(frame));
  }

  _timer(name, ms, fn, repeat = false) {
    this._clear(name);
    const set = repeat ? setInterval : setTimeout;
    const id = set(() => {
      if (!repeat) delete this._timers[name];
      fn();
    }, Math.min(Math.max(0, ms), MAX_TIMER_MS));
    this._timers[name] = { id, repeat };
  }

  _clear(name) {
    const timer = this._timers[name];
    if (!timer) return;
    (timer.repeat ? clearInterval : clearTimeout)(timer.id);
    delete this._timers[name];
  }

  _status(detail) {
    this.state = detail.state;
    this._emit("status", detail);
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

function memberOf(m) {
  return { user: m.user, client_id: m.client_id };
}

/** The room's WebSocket URL from `url`, or `baseUrl` (default: the page's origin) + `itemId`. */
function roomUrl({ url, baseUrl, itemId }) {
  if (url) return new URL(url).toString();
  if (!itemId) throw new TypeError("connect() needs `url`, or `itemId` (and optionally `baseUrl`)");
  const base = new URL(baseUrl ?? globalThis.location.origin);
  base.protocol = base.protocol.replace(/^http/, "ws");
  base.pathname = `${base.pathname.replace(/\/$/, "")}/items/${encodeURIComponent(itemId)}/ws`;
  return base.toString();
}

/** A JWT's claims, decoded without verifying (only to know when to refresh); null if opaque. */
export function jwtClaims(token) {
  try {
    const b64 = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(b64.padEnd(Math.ceil(b64.length / 4) * 4, "=")), (c) =>
      c.charCodeAt(0),
    );
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}
