"""The fast hand-written encoders and parser agree with the pydantic models that
document the protocol (and generate its schema)."""

import orjson
import pytest
from pydantic import TypeAdapter

from itemrooms.api.frames import (
    PONG,
    ClientFrame,
    FrameError,
    Ping,
    Publish,
    Refresh,
    ServerFrame,
    encode_duplicate,
    encode_message,
    encode_presence,
    encode_presence_count,
    encode_presence_list,
    encode_welcome,
    error_frame,
    parse_client_frame,
    with_ref,
)
from itemrooms.api.hub.backends.base import Message, Sender, Snapshot

SERVER = TypeAdapter(ServerFrame)
CLIENT = TypeAdapter(ClientFrame)
ALICE = Sender("alice", "c_a")
BOB = Sender("bob", "c_b")


def valid(text: str) -> dict[str, object]:
    frame = orjson.loads(text)
    SERVER.validate_python(frame)
    return frame  # type: ignore[no-any-return]


def test_server_frames_match_their_models() -> None:
    message = Message("42", 7, 1_700_000_000_000, ALICE, b'{"a":[1,"x"]}', None)
    frame = valid(encode_message(message))
    assert frame == {
        "type": "message",
        "item_id": "42",
        "seq": 7,
        "ts": 1_700_000_000_000,
        "sender": {"user": "alice", "client_id": "c_a"},
        "data": {"a": [1, "x"]},
    }
    assert valid(with_ref(encode_message(message), 'r"1'))["ref"] == 'r"1'
    assert valid(encode_presence("42", "leave", "bob", "c_b"))["event"] == "leave"
    snapshot = Snapshot(3, "e-1", (), False)
    welcome = valid(encode_welcome("42", ALICE, snapshot, [("bob", "c_b")], 2, False))
    assert welcome["members"] == [{"user": "bob", "client_id": "c_b"}]
    assert (welcome["member_count"], welcome["presence_mode"]) == (2, "list")
    large = valid(encode_welcome("42", ALICE, snapshot, [("bob", "c_b")], 900, True))
    assert (large["member_count"], large["presence_mode"]) == (900, "count")
    assert valid(encode_presence_count("42", 900, 3, 1)) == {
        "type": "presence_count",
        "item_id": "42",
        "member_count": 900,
        "joined": 3,
        "left": 1,
    }
    listed = valid(encode_presence_list("42", [("bob", "c_b")]))
    assert listed["members"] == [{"user": "bob", "client_id": "c_b"}]
    assert listed["member_count"] == 1
    assert (welcome["seq"], welcome["recovered"], welcome["user"]) == (3, False, "alice")
    assert welcome["epoch"] == "e-1"
    with_id = Message("42", 8, 1_700_000_000_000, ALICE, b"1", "r1", "m-1")
    assert valid(encode_message(with_id))["id"] == "m-1"  # every copy carries the id
    duplicate = valid(encode_duplicate(with_id, "r9"))
    assert (duplicate["seq"], duplicate["id"], duplicate["ref"]) == (8, "m-1", "r9")
    assert duplicate["duplicate"] is True
    assert valid(error_frame("invalid_json", "nope", "r1"))["ref"] == "r1"
    assert "ref" not in valid(error_frame("invalid_json", "nope"))
    assert valid(PONG) == {"type": "pong"}


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"publish","data":{"x":1},"ref":"r1"}',
        '{"type":"publish","data":null}',
        '{"type":"publish","data":1,"id":"m-01HZX3.a_b:c"}',
        '{"type":"publish","data":1,"id":"' + "i" * 64 + '"}',
        '{"type":"ping"}',
        '{"type":"refresh","token":"a.b.c"}',
    ],
)
def test_frames_the_parser_accepts_are_valid_models(text: str) -> None:
    parsed = parse_client_frame(text)
    model = CLIENT.validate_json(text)
    assert type(parsed) is {"publish": Publish, "ping": Ping, "refresh": Refresh}[model.type]
    if isinstance(parsed, Publish):
        assert parsed.id == getattr(model, "id", None)


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"publish"}',
        '{"type":"publish","data":1,"ref":5}',
        '{"type":"publish","data":1,"ref":"' + "r" * 129 + '"}',
        '{"type":"publish","data":1,"id":""}',
        '{"type":"publish","data":1,"id":"a b"}',
        '{"type":"publish","data":1,"id":5}',
        '{"type":"publish","data":1,"id":"' + "i" * 65 + '"}',
        '{"type":"refresh"}',
        '{"type":"nope"}',
        "[]",
    ],
)
def test_frames_the_parser_refuses_are_invalid_models(text: str) -> None:
    with pytest.raises(FrameError):
        parse_client_frame(text)
    with pytest.raises(ValueError):
        CLIENT.validate_json(text)


def test_published_data_owns_no_more_memory_than_its_length() -> None:
    """A room's history keeps it: orjson's working buffer must not come along."""
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [parse_client_frame('{"type":"publish","data":{"p":"x"}}') for _ in range(100)]
        per_frame = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert per_frame < 1024, per_frame  # orjson's own bytes would take about 4 KiB each
