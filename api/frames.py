"""Wire frames: the pydantic models that document them, and the fast paths that
parse and encode them.

The models are the contract (they generate the AsyncAPI document). The hot
paths do not run them per frame: ``parse_client_frame`` checks the same shapes
by hand, and server frames are encoded with orjson straight from dicts, once
per room rather than once per member.
"""

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, Field

from api.hub.backends.base import Message, Presence, Sender, Snapshot

MAX_REF_LENGTH = 128


# --- client to server -------------------------------------------------------


class PublishFrame(BaseModel):
    type: Literal["publish"]
    data: Any
    ref: str | None = Field(None, max_length=MAX_REF_LENGTH)


class PingFrame(BaseModel):
    type: Literal["ping"]


class RefreshFrame(BaseModel):
    type: Literal["refresh"]
    token: str


ClientFrame = Annotated[PublishFrame | PingFrame | RefreshFrame, Field(discriminator="type")]


# --- server to client -------------------------------------------------------


class MemberModel(BaseModel):
    user: str
    client_id: str


class WelcomeFrame(BaseModel):
    type: Literal["welcome"]
    item_id: str
    client_id: str
    user: str
    members: list[MemberModel]
    seq: int
    recovered: bool


class MessageFrame(BaseModel):
    type: Literal["message"]
    item_id: str
    seq: int
    ts: int = Field(description="milliseconds since the Unix epoch, set by the server")
    sender: MemberModel
    data: Any
    ref: str | None = Field(None, description="only in the sender's own copy")


class PresenceFrame(BaseModel):
    type: Literal["presence"]
    item_id: str
    event: Literal["join", "leave"]
    user: str
    client_id: str


class ErrorFrame(BaseModel):
    type: Literal["error"]
    code: str
    detail: str
    ref: str | None = None


class PongFrame(BaseModel):
    type: Literal["pong"]


class RefreshedFrame(BaseModel):
    type: Literal["refreshed"]
    exp: int


ServerFrame = Annotated[
    WelcomeFrame | MessageFrame | PresenceFrame | ErrorFrame | PongFrame | RefreshedFrame,
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
    __slots__ = ("data", "ref")

    def __init__(self, data: bytes, ref: str | None) -> None:
        self.data = data  # the ``data`` value, already encoded as JSON
        self.ref = ref


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
        return Publish(orjson.dumps(frame["data"]), ref)
    if kind == "ping":
        return PING
    if kind == "refresh":
        token = frame.get("token")
        if not isinstance(token, str) or not token:
            raise FrameError("invalid_frame", "refresh needs a token", ref)
        return Refresh(token)
    raise FrameError("unknown_type", f"unknown frame type {str(kind)[:32]!r}", ref)


def encode_message(message: Message) -> str:
    return orjson.dumps(
        {
            "type": "message",
            "item_id": message.item_id,
            "seq": message.seq,
            "ts": message.ts,
            "sender": {"user": message.sender.user, "client_id": message.sender.client_id},
            "data": orjson.Fragment(message.data),
        }
    ).decode()


def with_ref(frame: str, ref: str) -> str:
    """The sender's copy of an encoded message: the same frame plus its ``ref``."""
    return f'{frame[:-1]},"ref":{orjson.dumps(ref).decode()}}}'


def encode_presence(event: Presence) -> str:
    member = event.member
    return orjson.dumps(
        {
            "type": "presence",
            "item_id": event.item_id,
            "event": event.event,
            "user": member.user,
            "client_id": member.client_id,
        }
    ).decode()


def encode_welcome(item_id: str, member: Sender, snapshot: Snapshot) -> str:
    others = [
        {"user": m.user, "client_id": m.client_id}
        for m in snapshot.members
        if m.client_id != member.client_id
    ]
    return orjson.dumps(
        {
            "type": "welcome",
            "item_id": item_id,
            "client_id": member.client_id,
            "user": member.user,
            "members": others,
            "seq": snapshot.seq,
            "recovered": snapshot.recovered,
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
