"""The AsyncAPI 3.0 document of the room channel ``/items/{item_id}/ws``, as a dict.

Payload schemas come from the pydantic frame models of api/frames.py and the close
reasons from api/close_codes.py, so a new frame or reason cannot go undocumented: the
build fails until it has its text here. The document takes the client's point of view,
as AsyncAPI 3 describes one application: ``send`` operations are client-to-server
frames, ``receive`` operations server-to-client ones.
"""

from typing import Any, NamedTuple, get_args

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from itemrooms.api import close_codes
from itemrooms.api.close_codes import POLICY_VIOLATION, Close, Reason
from itemrooms.api.frames import ID_PATTERN, MAX_REF_LENGTH, ClientFrame, ServerFrame
from itemrooms.auth.credentials import BEARER_SUBPROTOCOL_PREFIX, ITEM_ID_PATTERN, SUBPROTOCOL

ASYNCAPI_VERSION = "3.0.0"
CHANNEL = "room"
ADDRESS = "/items/{item_id}/ws"
SCHEMAS = "#/components/schemas/"
ADDITION = " (addition to PROTOCOL.md v1)"

# PROTOCOL.md's "when" column, plus the reasons close_codes.py adds to it.
CLOSE_WHEN: dict[Reason, str] = {
    Reason.MISSING_TOKEN: "no credential at all",
    Reason.INVALID_TOKEN: "malformed, bad signature, wrong alg/iss/aud, not yet valid",
    Reason.TOKEN_EXPIRED: "expired at connect, or later without refresh",
    Reason.FORBIDDEN: "valid token, but no `items:read` or item not in `items`; "
    "also a kick (`POST /items/{item_id}/kick`)",
    Reason.ORIGIN_NOT_ALLOWED: "browser Origin not in the allow-list",
    Reason.INVALID_ITEM_ID: "item id outside the allowed form",
    Reason.INVALID_SINCE: "`since` is not a non-negative integer of at most 2^62" + ADDITION,
    Reason.INVALID_REQUEST: "any other malformed handshake parameter" + ADDITION,
    Reason.RATE_LIMITED: "kept flooding after error frames",
    Reason.ITEM_CLOSED: "the application closed the room (item deleted)",
    Reason.MESSAGE_TOO_BIG: "frame above the configured limit",
    Reason.SLOW_CONSUMER: "the client's send queue overflowed",
    Reason.TOO_MANY_CONNECTIONS: "a connection cap is reached, per process or per user" + ADDITION,
    Reason.GOING_AWAY: "server shutting down or draining",
    Reason.INTERNAL_ERROR: "a bug or a lost backend",
    Reason.EPOCH_CHANGED: "the room's sequence was lost and restarted: resume, then reload "
    "(PROTOCOL.md v1.1: reconnect with `since` and `epoch`, and learn `recovered: false`)",
}

# The ``code`` of an ``error`` frame: the connection stays open.
ERROR_CODES: dict[str, str] = {
    "invalid_json": "the text frame is not valid JSON",
    "invalid_frame": "not a JSON object, or missing or wrong fields (a `publish` without "
    f"`data`, a `refresh` without a token, a `ref` that is not a string of at most "
    f"{MAX_REF_LENGTH} characters, an `id` that is not 1 to 64 of `A-Z a-z 0-9 . _ : -`)",
    "unknown_type": "`type` is missing or names no client frame",
    "too_deep": "`data` nests deeper than allowed (`ITEMROOMS_MAX_JSON_DEPTH`)",
    "not_allowed": "a publish or binary frame without `items:write` for this item",
    "rate_limited": "over the publish rate, or any frame over the frame rate "
    "(ITEMROOMS_FRAME_RATE_LIMIT): dropped, not published; slow down (keeping on closes "
    "the connection with 1008 `rate_limited`)",
    "invalid_refresh": "the `refresh` token does not expire later than the current one",
    "unavailable": "the backend is briefly unreachable: the message was **not** published; retry",
    "outcome_unknown": "the backend took the publish but did not answer in time: it may or "
    "may not be stored; retry with the same `id` (PROTOCOL.md v1.1), which is applied once",
}


class FrameDoc(NamedTuple):
    summary: str
    description: str
    example: dict[str, Any]


FRAMES: dict[str, FrameDoc] = {
    # server to client
    "welcome": FrameDoc(
        "The first frame after joining: who you are, who else is here, the latest seq.",
        "`members` lists the *other* users, one entry per user however many connections "
        "it has (v1.2). `member_count` counts the users, you included; `presence_mode` is "
        "`list` while the room has at most `ITEMROOMS_PRESENCE_LIST_MAX` users (`members` "
        "is everyone, and `presence` frames follow each join and leave) and `count` in a "
        "large room (`members` is a sample of at most that many, and `presence_count` "
        "frames follow). `seq` is the room's latest `seq` (0 for a "
        "room that never had a message) and `epoch` the identity of the room's sequence "
        "(PROTOCOL.md v1.1). With `?since=` (and `&epoch=`), the missed messages follow as "
        "`message` frames before live traffic; `recovered` is `false` when some were "
        "already gone from history, or when the epoch given is not the room's.",
        {
            "type": "welcome",
            "item_id": "42",
            "client_id": "c_8f3a",
            "user": "alice",
            "members": [{"user": "bob", "client_id": "c_11aa"}],
            "member_count": 2,
            "presence_mode": "list",
            "seq": 17,
            "recovered": True,
            "epoch": "3f9c1a2b6751d9f20a4c1",
        },
    ),
    "message": FrameDoc(
        "A message published in the room, to every member, the sender included.",
        "`seq` increases by one per message within a room, across all server processes, "
        "and never repeats within an epoch. `ref` is echoed only in the sender's copy, so "
        "it doubles as the acknowledgement of its `publish`. `id` is in every copy of a "
        "message whose publisher gave one. `duplicate: true` marks the answer to a "
        "repeated `id`: the original message, sent to its sender alone (an "
        "acknowledgement, not a new message).",
        {
            "type": "message",
            "item_id": "42",
            "seq": 18,
            "ts": 1732712345678,
            "sender": {"user": "alice", "client_id": "c_8f3a"},
            "data": {"text": "hi"},
            "id": "m-01HZX3",
            "ref": "r1",
        },
    ),
    "presence": FrameDoc(
        "Another user joined or left the room (in `list` mode).",
        "Tells a member about the others (nobody is sent its own join); a `leave` also "
        "follows a client that dropped without closing. A user is one member however many "
        "connections it has: `join` comes with its first connection, `leave` after its "
        "last, with the `client_id` of the join (v1.2). Changes are sent at most once per "
        "`ITEMROOMS_PRESENCE_INTERVAL_MS`, coalesced: a user who came and went within one "
        "interval is not mentioned.",
        {
            "type": "presence",
            "item_id": "42",
            "event": "join",
            "user": "bob",
            "client_id": "c_11aa",
        },
    ),
    "presence_count": FrameDoc(
        "A large room's presence, at most once per interval (in `count` mode, v1.2).",
        "Sent instead of `presence` frames while the room has more than "
        "`ITEMROOMS_PRESENCE_LIST_MAX` users: `member_count` users now (you included), "
        "`joined` and `left` since the previous presence frame. A leave counts only after "
        "`ITEMROOMS_PRESENCE_GRACE_S` without a connection. The first one after a `list` "
        "mode switches the client to `count` mode.",
        {"type": "presence_count", "item_id": "42", "member_count": 12408, "joined": 37, "left": 5},
    ),
    "presence_list": FrameDoc(
        "A large room became small again: everyone in it (back to `list` mode, v1.2).",
        "Sent when a room in `count` mode falls to 90% of `ITEMROOMS_PRESENCE_LIST_MAX` "
        "users: `members` is every user, you included; `presence` frames follow again.",
        {
            "type": "presence_list",
            "item_id": "42",
            "member_count": 2,
            "members": [
                {"user": "alice", "client_id": "c_8f3a"},
                {"user": "bob", "client_id": "c_11aa"},
            ],
        },
    ),
    "error": FrameDoc(
        "A frame the server could not act on; the connection stays open.",
        "`ref` is that of the frame it answers, when it had one. Codes:\n\n"
        + "\n".join(f"- `{code}`: {when}" for code, when in ERROR_CODES.items()),
        {
            "type": "error",
            "code": "not_allowed",
            "detail": "token lacks items:write",
            "ref": "r2",
        },
    ),
    "pong": FrameDoc("The answer to a `ping`.", "", {"type": "pong"}),
    "refreshed": FrameDoc(
        "The `refresh` was accepted.",
        "`exp` is the new token's expiry (Unix seconds); its permissions apply from now on.",
        {"type": "refreshed", "exp": 1732715945},
    ),
    # client to server
    "publish": FrameDoc(
        "Publish `data` (any JSON) to the room; needs `items:write`.",
        f"`ref` is optional (a string of at most {MAX_REF_LENGTH} characters): it comes "
        "back in the sender's own copy of the `message`, and in any `error` frame "
        "about this publish. `id` (PROTOCOL.md v1.1) makes it idempotent: repeated by the "
        "same user into the same room within `ITEMROOMS_PUBLISH_DEDUP_S`, it is not "
        "published again. Publishes are rate-limited per connection.",
        {"type": "publish", "data": {"text": "hi"}, "ref": "r1", "id": "m-01HZX3"},
    ),
    "ping": FrameDoc("Ask for a `pong`.", "", {"type": "ping"}),
    "refresh": FrameDoc(
        "Replace the connection's token before it expires.",
        "The new token must be valid, for the same `sub`, and expire later than the "
        "current one: answered by `refreshed`. One that does not expire later gets an "
        "`invalid_refresh` error frame; an invalid token closes the connection with 1008 "
        "and its reason, one for another user or without access to the item with 1008 "
        "`forbidden`.",
        {"type": "refresh", "token": "<jwt>"},
    ),
}

BINARY = {
    "name": "binary",
    "title": "binary frame",
    "summary": "A binary frame, relayed unchanged to the other members of the room.",
    "description": "For CRDT/Yjs-style apps: sent by a member with `items:write` (otherwise "
    "answered by a `not_allowed` error frame), relayed unchanged to the other members; "
    "not stored, not sequenced, not replayed on resume.",
    "contentType": "application/octet-stream",
    "payload": {"type": "string", "format": "binary"},
}

# PROTOCOL.md's order: the first place that holds a credential decides.
PRECEDENCE = (
    "Credentials are looked for in this order, and the first place that holds one "
    "decides: a credential that is present but bad is rejected (1008 `invalid_token`), "
    "never skipped in favour of the next."
)
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "bearerHeader": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "1st: `Authorization: Bearer <jwt>`, for mobile apps, services and "
        "tests. " + PRECEDENCE,
    },
    "bearerSubprotocol": {
        "type": "httpApiKey",
        "name": "Sec-WebSocket-Protocol",
        "in": "header",
        "description": f"2nd: `Sec-WebSocket-Protocol: {SUBPROTOCOL}, "
        f"{BEARER_SUBPROTOCOL_PREFIX}<jwt>`, for browsers that must keep tokens out of "
        f'URLs (`new WebSocket(url, ["{SUBPROTOCOL}", "{BEARER_SUBPROTOCOL_PREFIX}" + '
        f"token])`). The server answers with `{SUBPROTOCOL}` and never echoes the token. "
        + PRECEDENCE,
    },
    "tokenQuery": {
        "type": "httpApiKey",
        "name": "token",
        "in": "query",
        "description": "3rd: `?token=<jwt>`, for browsers and quick tries (proxies may "
        "log URLs). " + PRECEDENCE,
    },
    "sessionCookie": {
        "type": "httpApiKey",
        "name": "session",
        "in": "cookie",
        "description": "4th: `session=<jwt>`, for same-site browser apps; counts only with "
        "an allowed `Origin` (1008 `origin_not_allowed` otherwise). " + PRECEDENCE,
    },
}


def frame_type(model: type[BaseModel]) -> str:
    (value,) = get_args(model.model_fields["type"].annotation)
    return str(value)


def frame_models(union: Any) -> list[type[BaseModel]]:
    """The models of a discriminated union such as ``ClientFrame``."""
    (members, *_) = get_args(union)
    return list(get_args(members))


def close_codes_table() -> list[dict[str, Any]]:
    """Every close reason with its code: those named by a ``Close`` constant, 1008 else."""
    codes = {v.reason: v.code for v in vars(close_codes).values() if isinstance(v, Close)}
    missing = [reason for reason in Reason if reason not in CLOSE_WHEN]
    if missing:
        raise ValueError(f"api/asyncapi.py: no CLOSE_WHEN text for {missing}")
    return [
        {"code": codes.get(reason, POLICY_VIOLATION), "reason": str(reason), "when": when}
        for reason, when in ((r, CLOSE_WHEN[r]) for r in Reason)
    ]


def payload_schemas(models: list[tuple[type[BaseModel], JsonSchemaMode]]) -> dict[str, Any]:
    """components/schemas: each model's JSON Schema, its ``$defs`` lifted beside it."""
    schemas: dict[str, Any] = {}
    for model, mode in models:
        schema = model.model_json_schema(ref_template=SCHEMAS + "{model}", mode=mode)
        for name, definition in {**schema.pop("$defs", {}), model.__name__: schema}.items():
            if schemas.setdefault(name, definition) != definition:
                raise ValueError(f"two different JSON Schemas named {name}")
    return schemas


def message(model: type[BaseModel]) -> dict[str, Any]:
    kind = frame_type(model)
    doc = FRAMES.get(kind)
    if doc is None:
        raise ValueError(f"api/asyncapi.py: no FRAMES entry for the {kind!r} frame")
    result: dict[str, Any] = {
        "name": kind,
        "title": f"{kind} frame",
        "summary": doc.summary,
    }
    if doc.description:
        result["description"] = doc.description
    result["contentType"] = "application/json"
    result["payload"] = {"$ref": SCHEMAS + model.__name__}
    result["examples"] = [{"name": kind, "payload": doc.example}]
    if kind == "error":
        result["x-error-codes"] = [{"code": c, "when": w} for c, w in ERROR_CODES.items()]
    return result


def operation(action: str, name: str, summary: str) -> dict[str, Any]:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{CHANNEL}"},
        "summary": summary,
        "messages": [{"$ref": f"#/channels/{CHANNEL}/messages/{name}"}],
    }


def channel_description(closes: list[dict[str, Any]]) -> str:
    rows = "\n".join(f"| {c['code']} | `{c['reason']}` | {c['when']} |" for c in closes)
    return (
        "One WebSocket connection per room member. JSON text frames, one object each, "
        "with a `type`; binary frames are relayed. A bad frame gets an `error` frame and "
        "the connection stays open.\n\n"
        "**Resume**: `?since=<seq>` replays, before live traffic, every message of the "
        "room with a larger `seq` that history still holds, in order and without "
        "duplicates; `welcome.recovered` is `false` when some were already gone.\n\n"
        "**Close codes.** A rejected handshake is accepted and closed at once, so the "
        "client reads the code and reason (not a bare HTTP 403); a live connection is "
        "closed the same way. Also listed in `x-close-codes`.\n\n"
        "| code | reason | when |\n|---|---|---|\n" + rows + "\n"
    )


def connection_bindings() -> dict[str, Any]:
    return {
        "ws": {
            "method": "GET",
            "query": {
                "type": "object",
                "properties": {
                    "since": {
                        "type": "integer",
                        "minimum": 0,
                        "maximum": 2**62,
                        "description": "Resume: replay the messages with a larger `seq` "
                        "before live traffic (1008 `invalid_since` if not a non-negative "
                        "integer of at most 2^62).",
                    },
                    "epoch": {
                        "type": "string",
                        "pattern": ID_PATTERN,
                        "description": "With `since`: the `epoch` of the welcome the client "
                        "last had (PROTOCOL.md v1.1). The room's own: the replay is exactly "
                        "what was missed; another: `recovered` is false and the replay is "
                        "the current epoch's history (1008 `invalid_request` if malformed).",
                    },
                    "token": {
                        "type": "string",
                        "description": "A JWT (the `tokenQuery` security scheme).",
                    },
                },
            },
            "headers": {
                "type": "object",
                "properties": {
                    "Authorization": {
                        "type": "string",
                        "description": "`Bearer <jwt>` (the `bearerHeader` security scheme).",
                    },
                    "Sec-WebSocket-Protocol": {
                        "type": "string",
                        "description": f"`{SUBPROTOCOL}, {BEARER_SUBPROTOCOL_PREFIX}<jwt>` "
                        "(the `bearerSubprotocol` security scheme).",
                    },
                    "Cookie": {
                        "type": "string",
                        "description": "`session=<jwt>` (the `sessionCookie` security scheme).",
                    },
                    "Origin": {
                        "type": "string",
                        "description": "When present, must be an allowed origin "
                        "(`ITEMROOMS_ALLOWED_ORIGINS`, else the server's own), or the "
                        "connection is closed with 1008 `origin_not_allowed`.",
                    },
                },
            },
            "bindingVersion": "0.1.0",
        }
    }


def build_asyncapi(version: str, summary: str) -> dict[str, Any]:
    """The whole document; ``version`` and ``summary`` are the FastAPI app's."""
    received = frame_models(ServerFrame)
    sent = frame_models(ClientFrame)
    closes = close_codes_table()
    messages = {frame_type(m): message(m) for m in received + sent}
    messages["binary"] = BINARY
    operations: dict[str, Any] = {}
    for model in received:
        kind = frame_type(model)
        operations[f"receive{kind.title()}"] = operation("receive", kind, FRAMES[kind].summary)
    for model in sent:
        kind = frame_type(model)
        operations[f"send{kind.title()}"] = operation("send", kind, FRAMES[kind].summary)
    operations["sendBinary"] = operation("send", "binary", "Send a binary frame to relay.")
    operations["receiveBinary"] = operation(
        "receive", "binary", "A binary frame another member sent."
    )
    operations["sendPing"]["reply"] = {
        "channel": {"$ref": f"#/channels/{CHANNEL}"},
        "messages": [{"$ref": f"#/channels/{CHANNEL}/messages/pong"}],
    }
    operations["sendRefresh"]["reply"] = {
        "channel": {"$ref": f"#/channels/{CHANNEL}"},
        "messages": [{"$ref": f"#/channels/{CHANNEL}/messages/refreshed"}],
    }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "itemrooms",
            "version": version,
            "description": f"{summary}\n\n"
            "The WebSocket protocol of docs/PROTOCOL.md (v1), from the client's point of "
            "view: `send` operations are frames the client sends, `receive` operations "
            "frames the server sends. The HTTP API is described in openapi/openapi.json.",
            "license": {"name": "MIT"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "development": {
                "host": "127.0.0.1:8000",
                "protocol": "ws",
                "description": "`itemrooms serve` (or `make run`) on this machine; in "
                "production, `wss` on your own host behind a proxy that passes WebSocket "
                "upgrades.",
                "security": [
                    {"$ref": f"#/components/securitySchemes/{name}"} for name in SECURITY_SCHEMES
                ],
            }
        },
        "channels": {
            CHANNEL: {
                "address": ADDRESS,
                "title": "an item's room",
                "summary": "The room of one item: messages, presence, resume.",
                "description": channel_description(closes),
                "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
                "parameters": {"item_id": {"$ref": "#/components/parameters/item_id"}},
                "bindings": connection_bindings(),
                "x-close-codes": closes,
            }
        },
        "operations": operations,
        "components": {
            "schemas": payload_schemas(
                [(m, "serialization") for m in received] + [(m, "validation") for m in sent]
            ),
            "messages": messages,
            "parameters": {
                "item_id": {
                    "description": "The room: the id of an item of your application, 1 to "
                    "128 characters of `A-Z a-z 0-9 . _ : -` (pattern "
                    f"`{ITEM_ID_PATTERN}`); anything else closes with 1008 "
                    "`invalid_item_id`.",
                    "examples": ["42", "sku-123", "doc:2024.v1_a"],
                    "x-pattern": ITEM_ID_PATTERN,
                }
            },
            "securitySchemes": SECURITY_SCHEMES,
        },
    }
