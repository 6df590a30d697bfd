// Types for itemrooms.js (the same code as the server's /static/itemrooms.js), for
// PROTOCOL.md v1.1. Hand-written beside the JavaScript; tests/clients/ compiles a
// consumer against them with `tsc --strict` and checks that a misspelt event fails.

/** Any JSON value: what a message's `data` can be. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Who sent a message, or who is present: one connection of one user. */
export interface Member {
  user: string;
  client_id: string;
}

export interface WelcomeFrame {
  type: "welcome";
  item_id: string;
  client_id: string;
  user: string;
  /** The other users, one entry each (in `count` mode, a sample). */
  members: Member[];
  /** Users in the room, you included (v1.2). */
  member_count?: number;
  /** `list`: presence frames follow; `count`: a large room, presence_count frames follow (v1.2). */
  presence_mode?: PresenceMode;
  /** The room's latest seq. */
  seq: number;
  /** The room's sequence (v1.1); a new epoch means seqs started over. */
  epoch?: string;
  /** False when messages after `since` may be missing: reload the item's state. */
  recovered: boolean;
}

export interface MessageFrame<D = Json> {
  type: "message";
  item_id: string;
  seq: number;
  /** Milliseconds since the epoch, when the room accepted it. */
  ts: number;
  sender: Member;
  data: D;
  /** Set on your own copy of your publish. */
  ref?: string;
  /** The publish id (v1.1). */
  id?: string;
  /** Set on the answer to a repeated id: the original message, not a new one. */
  duplicate?: boolean;
}

export interface PresenceFrame {
  type: "presence";
  item_id: string;
  event: "join" | "leave";
  user: string;
  client_id: string;
}

/** A large room's presence, at most once per interval (v1.2). */
export interface PresenceCountFrame {
  type: "presence_count";
  item_id: string;
  member_count: number;
  joined: number;
  left: number;
}

export type PresenceMode = "list" | "count";

/** What the `count` event carries: the room's size, whatever its presence mode. */
export interface MemberCount {
  memberCount: number;
  presenceMode: PresenceMode;
  /** Users who joined and left with this change. */
  joined: number;
  left: number;
}

export type RoomState = "connecting" | "open" | "reconnecting" | "closed";

export interface RoomStatus {
  state: RoomState;
  /** The close code and reason that led here (reconnecting, closed). */
  code?: number;
  reason?: string;
  /** Reconnecting: which attempt, and how long it waits first. */
  attempt?: number;
  delayMs?: number;
  /** Open: false means messages may be missing, the one signal to reload the item. */
  recovered?: boolean;
  /** Open: the room's sequence restarted (a new epoch). */
  reset?: boolean;
}

export interface CloseInfo {
  code: number;
  reason: string;
  wasClean?: boolean;
  /** Whether the room reconnects by itself after this close. */
  willRetry: boolean;
}

/** Every event a room emits, with its detail. */
export interface RoomEvents {
  welcome: WelcomeFrame;
  message: MessageFrame;
  presence: PresenceFrame;
  members: Member[];
  count: MemberCount;
  status: RoomStatus;
  close: CloseInfo;
  error: RoomError;
  refreshed: { type: "refreshed"; exp: number };
  binary: ArrayBuffer;
}

export type RoomEventName = keyof RoomEvents;

export type TokenSource = string | (() => string | Promise<string>);

export interface ConnectOptions {
  /** The room's full WebSocket URL (`wss://host/items/42/ws`)... */
  url?: string;
  /** ...or a base (`wss://host`, `https://host`; default: this page's origin) and an item. */
  baseUrl?: string;
  itemId?: string;
  /** The token, or a function asked for one at every (re)connect and before expiry. */
  token: TokenSource;
  /** Resume after this seq (one the app stored), in this epoch. */
  since?: number;
  epoch?: string;
  baseDelayMs?: number;
  maxDelayMs?: number;
  pingIntervalMs?: number;
  pongTimeoutMs?: number;
  openTimeoutMs?: number;
  publishTimeoutMs?: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
  dedupWindowMs?: number;
  refreshLeadMs?: number;
  /** A WebSocket implementation (default: the global one). */
  WebSocket?: typeof WebSocket;
}

export interface PublishOptions {
  /** Your own idempotency key (1 to 64 of A-Z a-z 0-9 . _ : -); default: a unique one. */
  id?: string;
  /** How long to wait for a connection to go out on, instead of `publishTimeoutMs`. */
  timeoutMs?: number;
}

/** An error frame from the server, or a publish that definitely failed. */
export declare class RoomError extends Error {
  constructor(code: string, detail: string);
  /** `not_allowed`, `rate_limited`, `unavailable`, `not_connected`, `closed`,
   * `message_too_big`, `invalid_id`, `outcome_unknown`, ... */
  readonly code: string;
  readonly detail: string;
}

/** One item's room: connects at once and keeps itself connected. */
export declare class Room extends EventTarget {
  constructor(options: ConnectOptions);
  /** The last seq delivered to the app (null until the first welcome, unless `since`). */
  seq: number | null;
  /** The epoch `seq` belongs to. */
  epoch: string | null;
  state: RoomState;
  itemId: string | null;
  clientId: string | null;
  user: string | null;
  /** The other users, one entry each (in `count` mode, a sample from the welcome). */
  get members(): Member[];
  /** Users in the room, you included: exact in both presence modes (v1.2). */
  memberCount: number;
  /** `list` while `members` is everyone; `count` in a large room (v1.2). */
  presenceMode: PresenceMode;
  /** Subscribe to an event; returns a function that unsubscribes. */
  on<K extends RoomEventName>(type: K, handler: (detail: RoomEvents[K]) => void): () => void;
  /** Publish `data`, exactly once; resolves with the message as the room has it. */
  publish<D extends Json = Json>(data: D, options?: PublishOptions): Promise<MessageFrame<D>>;
  /** Send a binary frame to the other members (not stored, not sequenced). */
  sendBinary(bytes: ArrayBuffer | ArrayBufferView | Blob): void;
  /** Leave the room for good. */
  close(): void;
}

/** Join a room. */
export declare function connect(options: ConnectOptions): Room;

/** Close reasons after which reconnecting cannot help. */
export declare const FATAL_REASONS: ReadonlySet<string>;
export declare const ID_PATTERN: RegExp;

/** A JWT's claims, decoded without verifying; null if it is not a JWT. */
export declare function jwtClaims(token: string): Record<string, unknown> | null;
