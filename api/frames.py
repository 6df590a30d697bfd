"""Wire frames: the pydantic models that document them, and the fast paths that
parse and encode them.

The models are the contract (they generate the AsyncAPI document). The hot
paths do not run them per frame: ``parse_client_frame`` checks the same shapes
by hand, and server frames are encoded with orjson straight from dicts, once
per room rather than once per member.
"""

import math
import re
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from itemrooms.api.hub.backends.base import Message, Sender, Snapshot

MAX_REF_LENGTH = 128
# A publish id (and an epoch): PROTOCOL.md v1.1's "1 to 64 characters of A-Z a-z 0-9 . _ : -".
ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
is_id = re.compile(ID_PATTERN).fullmatch

ErrorCode = Literal[
    "invalid_json",
    "invalid_frame",
    "unknown_type",
    "too_deep",
    "not_allowed",
    "rate_limited",
    "invalid_refresh",
    "unavailable",
    "outcome_unknown",
]


# --- client to server -------------------------------------------------------


class PublishFrame(BaseModel):
    """Publish ``data`` to every member of the room (needs ``items:write``)."""

    type: Literal["publish"]
    data: Any = Field(description="Any JSON value, delivered as the message's data")
    ref: str | SkipJsonSchema[None] = Field(
        None,
        max_length=MAX_REF_LENGTH,
        description="Echoed in the sender's own copy of the message: the acknowledgement",
    )
    id: str | SkipJsonSchema[None] = Field(
        None,
        pattern=ID_PATTERN,
        description="Chosen by the client, unique per message: a publish repeated with the "
        "same id (same user, same room, within ITEMROOMS_PUBLISH_DEDUP_S) is not published "
        "again; its sender gets the original message with duplicate: true",
    )


class PingFrame(BaseModel):
    """Answered by a ``pong``; an application-level keepalive."""

    type: Literal["ping"]


class RefreshFrame(BaseModel):
    """A newer token for the same user, before the current one expires."""

    type: Literal["refresh"]
    token: str = Field(min_length=1, description="A JWT for the same sub, expiring later")


ClientFrame = Annotated[PublishFrame | PingFrame | RefreshFrame, Field(discriminator="type")]


# --- server to client -------------------------------------------------------


class MemberModel(BaseModel):
    user: str = Field(description="The token's sub")
    client_id: str = Field(description="This connection's id, unique per connection")


class WelcomeFrame(BaseModel):
    """The first frame of every connection."""

    type: Literal["welcome"]
    item_id: str
    client_id: str = Field(description="This connection's id")
    user: str = Field(description="This connection's user (the token's sub)")
    members: list[MemberModel] = Field(
        description="The other users, on every process, one entry each (the client_id "
        "of the connection that brought the user in); in a large room (presence_mode "
        "count) at most ITEMROOMS_PRESENCE_LIST_MAX of them"
    )
    member_count: int = Field(ge=0, description="Users in the room, you included (v1.2: big rooms)")
    presence_mode: Literal["list", "count"] = Field(
        description="list: presence frames follow each join and leave, and members is "
        "everyone; count: a large room, presence_count frames follow instead (v1.2)"
    )
    seq: int = Field(ge=0, description="The room's latest seq; 0 for a room without messages")
    recovered: bool = Field(
        description="With since: false when messages after it were already gone from history, "
        "or when the epoch given is not the room's"
    )
    epoch: str = Field(
        description="The identity of the room's sequence; resume with since and this epoch"
    )


class MessageFrame(BaseModel):
    """A message, to every member including its sender."""

    type: Literal["message"]
    item_id: str
    seq: int = Field(ge=1, description="Grows by one per message in the room; never repeats")
    ts: int = Field(description="Milliseconds since the Unix epoch, set by the server")
    sender: MemberModel
    data: Any = Field(description="What was published")
    ref: str | SkipJsonSchema[None] = Field(
        None, max_length=MAX_REF_LENGTH, description="Only in the sender's own copy"
    )
    id: str | SkipJsonSchema[None] = Field(
        None, description="The publisher's id, in every copy, when it gave one"
    )
    duplicate: Literal[True] | SkipJsonSchema[None] = Field(
        None,
        description="Only in the answer to a repeated id: the original message, sent to "
        "the sender alone; an acknowledgement, not a new message",
    )


class PresenceFrame(BaseModel):
    """Another user joined (its first connection) or left (its last one); nobody is told
    of its own join."""

    type: Literal["presence"]
    item_id: str
    event: Literal["join", "leave"]
    user: str
    client_id: str


class PresenceCountFrame(BaseModel):
    """A large room's presence since the last presence frame: counts, not names."""

    type: Literal["presence_count"]
    item_id: str
    member_count: int = Field(ge=0, description="Users in the room now, you included")
    joined: int = Field(ge=0, description="Users who joined since the last presence frame")
    left: int = Field(ge=0, description="Users who left since the last presence frame")


class PresenceListFrame(BaseModel):
    """The room became small again: everyone in it; join and leave frames follow."""

    type: Literal["presence_list"]
    item_id: str
    member_count: int = Field(ge=0, description="Users in the room, you included")
    members: list[MemberModel] = Field(description="Every user in the room, you included")


class ErrorFrame(BaseModel):
    """A client frame was refused; the connection stays open."""

    type: Literal["error"]
    code: ErrorCode
    detail: str = Field(description="For humans; switch on code, not on this")
    ref: str | SkipJsonSchema[None] = Field(None, description="The refused frame's ref, if any")


class PongFrame(BaseModel):
    """The answer to a ``ping``."""

    type: Literal["pong"]


class RefreshedFrame(BaseModel):
    """A ``refresh`` was accepted."""

    type: Literal["refreshed"]
    exp: int = Field(ge=0, description="The new token's expiry, in Unix seconds")


ServerFrame = Annotated[
    WelcomeFrame
    | MessageFrame
    | PresenceFrame
    | PresenceCountFrame
    | PresenceListFrame
    | ErrorFrame
    | PongFrame
    | RefreshedFrame,
    Field(discriminator="type"),
]


# --- the fast paths ---------------------------------------------------------


class FrameError(Exception):
    """A client frame we answer with an ``error`` frame; the connection stays open."""

    def __init__(self, code: str, detail: str, ref: str | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.ref = ref


class Publish:
    __slots__ = ("data", "ref", "id")

    def __init__(self, data: bytes, ref: str | None, id: str | None = None) -> None:
        self.data = data  # the ``data`` value, already encoded as JSON
        self.ref = ref
        self.id = id


class Ping:
    __slots__ = ()


class Refresh:
    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token


PING = Ping()


def depth(value: Any, limit: int) -> int:
    """How deeply ``value`` nests (a scalar is 0), counting no further than ``limit + 1``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            level += 1
            if level > deepest:
                deepest = level
                if deepest > limit:
                    return deepest
            stack.extend(
                (child, level) for child in (node.values() if isinstance(node, dict) else node)
            )
    return deepest


def compact_json(value: Any) -> bytes:
    """``value`` as JSON bytes that own no more memory than their length.

    orjson returns bytes that keep its whole working buffer (about 4 KiB for a
    short value, a quarter MiB for 16 KiB of data): fine for a frame about to be
    sent, not for one kept in a room's history. The copy is exact-sized."""
    return bytes(memoryview(orjson.dumps(value)))


# What orjson (the WebSocket path's decoder) keeps as an integer; wider ones it decodes
# as floats, and so does encode_data, so that both paths publish the same value.
WIDEST_INTS = (-(2**63), 2**64 - 1)


def encode_data(value: Any) -> bytes:
    """A published value decoded elsewhere (the HTTP API's body) as the WebSocket path
    would have it: integers beyond 64 bits as floats. ValueError for what the WebSocket
    path refuses as ``invalid_json`` (NaN, Infinity, a number too big for a float such
    as 1e400, which Python's decoder makes infinite) and what JSON cannot carry (a lone
    surrogate, an integer beyond any float)."""
    if not _all_finite(value):
        raise ValueError("NaN, Infinity and numbers beyond a double are not JSON")
    try:
        return compact_json(value)
    except TypeError as exc:
        if "Integer exceeds" not in str(exc):
            raise ValueError(f"data cannot be encoded as JSON: {exc}") from None
    try:
        return compact_json(_wide_ints_as_floats(value))
    except (TypeError, OverflowError) as exc:
        raise ValueError(f"data cannot be encoded as JSON: {exc}") from None


def _all_finite(value: Any) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, float):
            if not math.isfinite(node):
                return False
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return True


def _wide_ints_as_floats(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        low, high = WIDEST_INTS
        return value if low <= value <= high else float(value)
    if isinstance(value, list):
        return [_wide_ints_as_floats(v) for v in value]
    if isinstance(value, dict):
        return {k: _wide_ints_as_floats(v) for k, v in value.items()}
    return value


def parse_client_frame(text: str, max_depth: int = 32) -> Publish | Ping | Refresh:
    """Decode one text frame, or raise FrameError saying what is wrong with it."""
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise FrameError("invalid_json", "frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise FrameError("invalid_frame", "frame must be a JSON object")
    ref = frame.get("ref")
    if ref is not None and (not isinstance(ref, str) or len(ref) > MAX_REF_LENGTH):
        raise FrameError("invalid_frame", f"ref must be a string of at most {MAX_REF_LENGTH}")
    kind = frame.get("type")
    if kind == "publish":
        if "data" not in frame:
            raise FrameError("invalid_frame", "publish needs data", ref)
        if depth(frame["data"], max_depth) > max_depth:
            raise FrameError("too_deep", f"data nests deeper than {max_depth} levels", ref)
        id = frame.get("id")
        if id is not None and not (isinstance(id, str) and is_id(id)):
            raise FrameError("invalid_frame", "id must be 1 to 64 of A-Z a-z 0-9 . _ : -", ref)
        return Publish(compact_json(frame["data"]), ref, id)
    if kind == "ping":
        return PING
    if kind == "refresh":
        token = frame.get("token")
        if not isinstance(token, str) or not token:
            raise FrameError("invalid_frame", "refresh needs a token", ref)
        return Refresh(token)
    raise FrameError("unknown_type", f"unknown frame type {str(kind)[:32]!r}", ref)


def encode_message(message: Message) -> str:
    frame: dict[str, Any] = {
        "type": "message",
        "item_id": message.item_id,
        "seq": message.seq,
        "ts": message.ts,
        "sender": {"user": message.sender.user, "client_id": message.sender.client_id},
        "data": orjson.Fragment(message.data),
    }
    if message.id is not None:
        frame["id"] = message.id
    return orjson.dumps(frame).decode()


def with_ref(frame: str, ref: str) -> str:
    """The sender's copy of an encoded message: the same frame plus its ``ref``."""
    return f'{frame[:-1]},"ref":{orjson.dumps(ref).decode()}}}'


def encode_duplicate(original: Message, ref: str | None) -> str:
    """The answer to a repeated publish id: the original, marked, with this ``ref``."""
    frame = encode_message(original)
    if ref is not None:
        frame = with_ref(frame, ref)
    return frame[:-1] + ',"duplicate":true}'


def encode_presence(item_id: str, event: str, user: str, client_id: str) -> str:
    return orjson.dumps(
        {
            "type": "presence",
            "item_id": item_id,
            "event": event,
            "user": user,
            "client_id": client_id,
        }
    ).decode()


def encode_presence_count(item_id: str, member_count: int, joined: int, left: int) -> str:
    return orjson.dumps(
        {
            "type": "presence_count",
            "item_id": item_id,
            "member_count": member_count,
            "joined": joined,
            "left": left,
        }
    ).decode()


# A user as presence lists it: (user, the client_id named in its join).
Listed = tuple[str, str]


def encode_presence_list(item_id: str, members: list[Listed]) -> str:
    return orjson.dumps(
        {
            "type": "presence_list",
            "item_id": item_id,
            "member_count": len(members),
            "members": [{"user": user, "client_id": cid} for user, cid in members],
        }
    ).decode()


def encode_welcome(
    item_id: str,
    member: Sender,
    snapshot: Snapshot,
    others: list[Listed],
    member_count: int,
    large: bool,
) -> str:
    return orjson.dumps(
        {
            "type": "welcome",
            "item_id": item_id,
            "client_id": member.client_id,
            "user": member.user,
            "members": [{"user": user, "client_id": cid} for user, cid in others],
            "member_count": member_count,
            "presence_mode": "count" if large else "list",
            "seq": snapshot.seq,
            "recovered": snapshot.recovered,
            "epoch": snapshot.epoch,
        }
    ).decode()


def encode(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame).decode()


def error_frame(code: str, detail: str, ref: str | None = None) -> str:
    frame: dict[str, Any] = {"type": "error", "code": code, "detail": detail}
    if ref is not None:
        frame["ref"] = ref
    return encode(frame)


PONG = encode({"type": "pong"})
