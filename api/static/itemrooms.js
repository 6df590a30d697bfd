// itemrooms.js: a dependency-free client for itemrooms' WebSocket rooms (protocol v1.1).
//
//   import { connect } from "/static/itemrooms.js";
//   const room = connect({ baseUrl: "wss://rooms.example.com", itemId: "42",
//                          token: () => fetch("/my-token").then((r) => r.text()) });
//   room.on("message", (m) => console.log(m.seq, m.sender.user, m.data));
//   room.on("status", (s) => console.log(s.state, s.code, s.reason));
//   await room.publish({ text: "hi" });   // resolves with your message, as the room saw it
//
// What it does for you: the token goes in the subprotocol list (never in the URL);
// reconnects with exponential backoff and full jitter; resumes with
// `?since=<last seq>&epoch=<epoch>` and drops duplicates, so `message` events have no
// gaps and no repeats within an epoch; refreshes the token before it expires; pings
// while the page is visible and treats a missing pong as a dead connection; stops for
// good on close reasons no retry can fix.
//
// Publishes are exactly once: each carries an `id` of its own, and one that the
// server did not answer before a disconnect (or answered `outcome_unknown`) is settled
// from the resume's replay or sent again with the same `id`, which the server never
// publishes twice. So `publish()` resolves with the message's seq or rejects with a
// definite error, never "maybe".

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
/** What the server accepts as a publish `id` (and an `epoch`). */
export const ID_PATTERN = /^[A-Za-z0-9._:-]{1,64}$/;
/** Error codes that say only "this attempt was not published": after an attempt whose
 * outcome is unknown, they are retried, since that earlier attempt may have been. */
const NOT_THIS_ATTEMPT = new Set(["unavailable", "rate_limited"]);
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
  /** How long a publish may wait for a connection to go out on (then: `not_connected`). */
  publishTimeoutMs: 30_000,
  /** Retries after `outcome_unknown`: attempt n waits about min(max, base * 2^n). */
  retryBaseMs: 100,
  retryMaxMs: 2_000,
  /** The server's ITEMROOMS_PUBLISH_DEDUP_S: past it, sending an id again could publish twice. */
  dedupWindowMs: 300_000,
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
 * @property {string} [epoch] the epoch `since` belongs to (`room.epoch` when it was stored)
 * @property {number} [baseDelayMs] @property {number} [maxDelayMs]
 * @property {number} [pingIntervalMs] @property {number} [pongTimeoutMs]
 * @property {number} [openTimeoutMs] @property {number} [refreshLeadMs]
 * @property {number} [publishTimeoutMs] @property {number} [retryBaseMs]
 * @property {number} [retryMaxMs] @property {number} [dedupWindowMs]
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

/** An error frame from the server, or a publish that definitely failed. */
export class RoomError extends Error {
  /** @param {string} code e.g. `not_allowed`, `rate_limited`, `unavailable`, `not_connected`,
   * `closed`, `message_too_big`, `invalid_id`, `outcome_unknown` (see {@link Room#publish}) */
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
 * - `message`: a message frame, each seq once and in order within an epoch (never a
 *   `duplicate: true` copy: those only settle a publish)
 * - `presence`: a join or leave of someone else (a user: its first connection joins, its
 *   last one leaves); `members`: the member list changed
 * - `count`: `{memberCount, presenceMode, joined, left}` whenever `memberCount` may have
 *   changed. Above the server's `ITEMROOMS_PRESENCE_LIST_MAX` users the room is in
 *   `count` mode: no `presence` events, `members` is a sample from the welcome, and
 *   `memberCount` stays exact (protocol v1.2)
 * - `status`: `{state, code, reason, attempt, delayMs}`, state one of `connecting`,
 *   `open`, `reconnecting`, `closed` (final: a fatal reason, or `close()`). With
 *   `open`: `recovered` and `reset`, **the one signal to reload the item's state**:
 *   `recovered: false` means messages may be missing (history no longer held them all,
 *   or the room's sequence restarted); `reset: true` says it was the latter (a new
 *   `room.epoch`: what follows is the new sequence, from what history holds of it).
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
    /** The epoch `seq` belongs to, from the last welcome (null for a server without epochs). */
    this.epoch = options.epoch ?? null;
    /** @type {"connecting" | "open" | "reconnecting" | "closed"} */
    this.state = "connecting";
    /** Who and where this connection is, from the last welcome. */
    this.itemId = options.itemId ?? null;
    this.clientId = null;
    this.user = null;
    this._members = new Map();
    /** Users in the room, you included (exact in both presence modes). */
    this.memberCount = 0;
    /** @type {"list" | "count"} `list`: `members` is everyone; `count`: a large room's sample. */
    this.presenceMode = "list";
    // Unsettled publishes, in the order they were made: id -> entry (see publish()).
    this._publishes = new Map();
    this._refIds = new Map(); // ref -> id
    this._idPrefix = randomPrefix();
    this._refs = 0;
    this._replayTo = null; // after a welcome: the seq that ends its replay
    this._complete = true; // whether that replay is all that was missed (recovered)
    this._bigBinary = 0; // the largest binary frame sent on this socket (for a 1009)
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

  /** The other users: `[{user, client_id}]`, one per user (a sample in `count` mode). */
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
   * Publish `data` (any JSON), exactly once. Resolves with the message frame once the
   * room has it: your own copy (`ref` set), or the copy the server answers a repeated
   * `id` with (`duplicate: true`, the original seq), or the replayed copy after a
   * reconnect. A publish made while (re)connecting waits for the connection, at most
   * `publishTimeoutMs`. Once sent it is answered by the server, across reconnects: an
   * `outcome_unknown` answer, or a disconnect before any answer, makes the client send
   * it again with the same `id`, which the server answers with the message it already
   * has, if any, never a second one (and a resume's replay carrying the id settles it).
   *
   * Rejects with a {@link RoomError} only when the outcome is known:
   * - an error frame: `not_allowed`, `rate_limited`, `unavailable` (not published), ...
   * - `not_connected`: the room is closed, or no connection within the timeout (not sent)
   * - `message_too_big`: the server closed 1009 over it (not published)
   * - `invalid_id`: `options.id` is not 1..64 of `A-Z a-z 0-9 . _ : -` (not sent)
   * - `closed`: the room closed for good (a fatal reason, or `close()`) first
   * - `outcome_unknown`: only if the server could not tell for a whole `dedupWindowMs`
   *   (past that window a retry could publish it twice)
   * @param {any} data
   * @param {{id?: string, timeoutMs?: number}} [options] `id`: your own idempotency key
   *   (default: a unique one); `timeoutMs`: instead of `publishTimeoutMs`
   * @returns {Promise<object>}
   */
  publish(data, options = {}) {
    if (this.state === "closed") {
      return Promise.reject(new RoomError("not_connected", "the room is closed"));
    }
    const id = options.id ?? `${this._idPrefix}-${this._refs + 1}`;
    if (typeof id !== "string" || !ID_PATTERN.test(id)) {
      return Promise.reject(new RoomError("invalid_id", "an id is 1 to 64 of A-Z a-z 0-9 . _ : -"));
    }
    if (this._publishes.has(id)) {
      return Promise.reject(new RoomError("invalid_id", `a publish with id ${id} is in progress`));
    }
    const ref = `r${++this._refs}`;
    let text;
    try {
      text = JSON.stringify({ type: "publish", data, ref, id });
    } catch (err) {
      return Promise.reject(err); // not JSON (a BigInt, a cycle): a bug, not a room error
    }
    return new Promise((resolve, reject) => {
      // sentAt: when first sent (then its outcome is the server's to tell); uncertain: an
      // attempt may have been published without our knowing; timer: waiting to go out.
      // held: sent longer ago than the dedup window, waiting for the replay to tell.
      const entry = { id, ref, text, resolve, reject, sentAt: null, uncertain: false,
        retries: 0, timer: null, socket: null, held: false };
      this._publishes.set(id, entry);
      this._refIds.set(ref, id);
      if (this.state === "open") this._sendPublish(entry);
      else this._waitToSend(entry, options.timeoutMs ?? this.options.publishTimeoutMs);
    });
  }

  /** Send a binary frame to the other members (not stored, not sequenced). */
  sendBinary(bytes) {
    if (this.state !== "open") throw new RoomError("not_connected", `the room is ${this.state}`);
    this._bigBinary = Math.max(this._bigBinary, bytes.byteLength ?? bytes.size ?? 0);
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
    if (this.seq !== null && this.epoch !== null) url.searchParams.set("epoch", this.epoch);
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
    this._bigBinary = 0;
    ws.onmessage = (e) => this._onData(e.data);
    ws.onclose = (e) => this._onClose({ code: e.code, reason: e.reason, wasClean: e.wasClean });
    this._timer("open", this.options.openTimeoutMs, () => this._drop("open_timeout"));
  }

  _onClose(event) {
    const ws = this._detach();
    if (event.code === 1009) this._tooBig(ws);
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

  /** After a close: stop for good on a fatal reason, otherwise reconnect with backoff
   * (at once after 1012 `epoch_changed`: the room is there, with a new sequence). */
  _retry(event) {
    const fatal = FATAL_REASONS.has(event.reason);
    this._closed(event, !fatal);
    if (fatal) {
      this._status({ state: "closed", code: event.code, reason: event.reason });
      return;
    }
    const cap = Math.min(this.options.maxDelayMs, this.options.baseDelayMs * 2 ** this._attempt);
    const delayMs = event.code === 1012 ? 0 : Math.round(Math.random() * cap); // full jitter
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

  /** Forget the current socket: its handlers and timers. */
  _detach() {
    const ws = this._ws;
    if (ws) ws.onmessage = ws.onclose = null;
    this._ws = null;
    this._replayTo = null;
    for (const name of Object.keys(this._timers)) this._clear(name);
    return ws;
  }

  /** A connection ended: forget its members, tell the app; its unanswered publishes are
   * now of unknown outcome (or, for good, rejected). */
  _closed(event, willRetry) {
    for (const entry of [...this._publishes.values()]) {
      if (!willRetry) {
        const sent = entry.sentAt === null ? "not sent" : "sent, but not answered";
        this._settle(entry, null, new RoomError("closed",
          `the room closed (${event.code} ${event.reason}): ${sent}`));
      } else if (entry.sentAt !== null) {
        entry.uncertain = true;
        clearTimeout(entry.timer); // a retry's; everything goes out again after the welcome
        entry.timer = null;
      }
    }
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
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return; // not ours to understand; the server only sends JSON objects
    }
    if (frame === null || typeof frame !== "object") return;
    // Frame types this client does not know are ignored (protocol v1.1), as are fields.
    switch (frame.type) {
      case "welcome":
        return this._onWelcome(frame);
      case "message":
        return this._onMessage(frame);
      case "presence":
        if (frame.event === "join") {
          if (!this._members.has(frame.client_id)) this.memberCount += 1;
          this._members.set(frame.client_id, memberOf(frame));
        } else if (this._members.delete(frame.client_id)) {
          this.memberCount -= 1;
        }
        this._emit("presence", frame);
        this._emit("members", this.members);
        return frame.event === "join" ? this._counted(1, 0) : this._counted(0, 1);
      case "presence_count":
        this.memberCount = frame.member_count;
        this.presenceMode = "count";
        return this._counted(frame.joined, frame.left);
      case "presence_list":
        // The room is small again: everyone (you included), and presence events follow.
        this.presenceMode = "list";
        this.memberCount = frame.member_count;
        this._members = new Map(
          frame.members.filter((m) => m.user !== this.user).map((m) => [m.client_id, memberOf(m)]),
        );
        this._emit("members", this.members);
        return this._counted(0, 0);
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
    const epoch = typeof frame.epoch === "string" ? frame.epoch : null;
    // A new epoch, or (from a server without epochs) a seq that went backwards: the
    // room's sequence restarted, and everything it replays is new.
    const reset =
      this.seq !== null &&
      ((this.epoch !== null && epoch !== null && epoch !== this.epoch) || frame.seq < this.seq);
    if (this.seq === null || reset) this.seq = reset ? 0 : frame.seq;
    this.epoch = epoch;
    const recovered = frame.recovered !== false && !reset;
    this._members = new Map(frame.members.map((m) => [m.client_id, memberOf(m)]));
    // A server before protocol v1.2 sends neither: the others are listed, you are not.
    this.memberCount = frame.member_count ?? frame.members.length + 1;
    this.presenceMode = frame.presence_mode ?? "list";
    this.state = "open";
    // Before the app hears of it, so that what it publishes now comes after these.
    this._resend();
    this._replayTo = frame.seq > this.seq ? frame.seq : null;
    this._complete = recovered;
    if (this._replayTo === null) this._replayed();
    this._emit("welcome", frame);
    this._emit("members", this.members);
    this._counted(0, 0);
    this._status({ state: "open", recovered, reset });
    this._timer("ping", this.options.pingIntervalMs, () => this._ping(), true);
    this._scheduleRefresh();
  }

  _counted(joined, left) {
    const { memberCount, presenceMode } = this;
    this._emit("count", { memberCount, presenceMode, joined, left });
  }

  _onMessage(frame) {
    const entry = this._entryFor(frame);
    if (frame.duplicate === true) {
      // The answer to an id sent again: an acknowledgement, not a new message.
      if (entry) this._settle(entry, frame);
      return;
    }
    if (this.seq === null || frame.seq > this.seq) {
      this.seq = frame.seq;
      this._emit("message", frame);
    } // else seen before this reconnect (or before the epoch changed under it)
    if (entry) this._settle(entry, frame);
    if (this._replayTo !== null && frame.seq >= this._replayTo) this._replayed();
  }

  _onError(frame) {
    const id = frame.ref === undefined ? undefined : this._refIds.get(frame.ref);
    const entry = id === undefined ? undefined : this._publishes.get(id);
    if (entry) {
      this._publishFailed(entry, frame);
      return;
    }
    if (frame.code === "invalid_refresh") this._retryRefresh();
    this._emit("error", new RoomError(frame.code, frame.detail));
  }

  // -- publishes -------------------------------------------------------------------

  /** The unsettled publish a message frame answers: by its ref (our own live copy), or
   * by its id when we published it (a replayed copy carries the id, not the ref). */
  _entryFor(frame) {
    const id =
      frame.ref !== undefined
        ? this._refIds.get(frame.ref)
        : frame.sender?.user === this.user
          ? frame.id
          : undefined;
    return id === undefined ? undefined : this._publishes.get(id);
  }

  _sendPublish(entry) {
    clearTimeout(entry.timer);
    entry.timer = null;
    entry.held = false;
    entry.sentAt ??= Date.now();
    entry.socket = this._ws;
    this._ws.send(entry.text);
  }

  /** A publish made while not connected waits for the welcome, at most `ms`. */
  _waitToSend(entry, ms) {
    entry.timer = setTimeout(() => {
      if (entry.sentAt === null) {
        this._settle(entry, null, new RoomError("not_connected",
          `no connection within ${ms} ms: not sent`));
      }
    }, Math.min(Math.max(0, ms), MAX_TIMER_MS));
  }

  /** After a welcome, in the order they were made: publishes not sent yet, and those
   * sent without an answer. The server's dedup answers an id it already published with
   * its copy (or the replay settles it first), so sending again cannot publish twice —
   * within the dedup window. Older ones wait for the replay (see `_replayed`). */
  _resend() {
    const now = Date.now();
    for (const entry of this._publishes.values()) {
      if (entry.sentAt !== null && now - entry.sentAt > this.options.dedupWindowMs) {
        entry.held = true;
      } else {
        this._sendPublish(entry);
      }
    }
  }

  /** The welcome's replay is over. A publish held back that it did not settle: when the
   * replay was complete (`recovered`), it was never published, so sending it is safe;
   * otherwise nothing can tell any more. */
  _replayed() {
    this._replayTo = null;
    for (const entry of [...this._publishes.values()]) {
      if (!entry.held) continue;
      if (this._complete) this._sendPublish(entry);
      else this._settle(entry, null, this._unknown());
    }
  }

  _publishFailed(entry, frame) {
    if (frame.code === "outcome_unknown") entry.uncertain = true;
    const retry =
      frame.code === "outcome_unknown" || (entry.uncertain && NOT_THIS_ATTEMPT.has(frame.code));
    if (!retry) {
      this._settle(entry, null, new RoomError(frame.code, frame.detail));
      return;
    }
    if (Date.now() - entry.sentAt > this.options.dedupWindowMs) {
      this._settle(entry, null, this._unknown());
      return;
    }
    const { retryBaseMs, retryMaxMs } = this.options;
    const capMs = Math.min(retryMaxMs, retryBaseMs * 2 ** entry.retries);
    entry.retries += 1;
    const socket = this._ws;
    entry.timer = setTimeout(() => {
      entry.timer = null;
      // If the socket changed meanwhile, the welcome sent it again already.
      if (this._ws === socket && this.state === "open") this._sendPublish(entry);
    }, capMs / 2 + Math.random() * (capMs / 2));
  }

  _unknown() {
    const s = Math.round(this.options.dedupWindowMs / 1000);
    return new RoomError("outcome_unknown",
      `the server could not tell within ${s} s whether it was published`);
  }

  /** After a 1009: the largest publish sent on that socket is over the server's limit (as
   * large as the frame it refused, unless a binary frame was larger), hence unpublished;
   * sending it again would only be refused again. */
  _tooBig(ws) {
    let biggest = null;
    let size = 0;
    for (const entry of this._publishes.values()) {
      const bytes = new TextEncoder().encode(entry.text).length;
      if (entry.socket === ws && bytes > size) [biggest, size] = [entry, bytes];
    }
    if (biggest && size >= this._bigBinary) {
      this._settle(biggest, null, new RoomError("message_too_big",
        `the server refused a ${size}-byte frame: not published`));
    }
  }

  /** A publish's end: resolved with its message frame, or rejected with `error`. */
  _settle(entry, frame, error) {
    clearTimeout(entry.timer);
    this._publishes.delete(entry.id);
    this._refIds.delete(entry.ref);
    if (error) entry.reject(error);
    else entry.resolve(frame);
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

/** A random prefix for this client's publish ids: unique across tabs, devices and reloads. */
function randomPrefix() {
  const bytes = new Uint8Array(9);
  globalThis.crypto.getRandomValues(bytes);
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_");
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
