"""Rooms as members see them over real connections: welcome, fan-out, seq, ref,
presence, isolation, error frames, ping, binary relay."""

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection

from tests.conftest import Mint
from tests.support.client import TIMEOUT, closed_with, join, recv_json, recv_type, send_json
from tests.support.server import ServerProcess


async def test_welcome_of_a_new_room(server: ServerProcess, mint: Mint, item: str) -> None:
    ws, welcome = await join(server, item, mint("alice"))
    async with ws:
        assert welcome["type"] == "welcome"
        assert welcome["item_id"] == item
        assert welcome["user"] == "alice"
        assert welcome["client_id"].startswith("c_")
        assert welcome["members"] == []
        assert welcome["seq"] == 0
        assert welcome["recovered"] is True


async def test_welcome_lists_the_others_but_not_oneself(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    a, wa = await join(server, item, mint("alice"))
    b, wb = await join(server, item, mint("bob"))
    async with a, b:
        assert wb["members"] == [{"user": "alice", "client_id": wa["client_id"]}]
        assert wa["client_id"] != wb["client_id"]


async def test_fan_out_in_seq_order_with_ref_only_for_the_sender(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    a, wa = await join(server, item, mint("alice"))
    b, _ = await join(server, item, mint("bob"))
    c, _ = await join(server, item, mint("carol"))
    async with a, b, c:
        for i in range(5):
            await send_json(a, {"type": "publish", "data": {"n": i}, "ref": f"r{i}"})
        for ws in (a, b, c):
            frames = [await recv_type(ws, "message") for _ in range(5)]
            assert [f["seq"] for f in frames] == [1, 2, 3, 4, 5]
            assert [f["data"] for f in frames] == [{"n": i} for i in range(5)]
            for f in frames:
                assert f["item_id"] == item
                assert f["sender"] == {"user": "alice", "client_id": wa["client_id"]}
                assert isinstance(f["ts"], int) and f["ts"] > 1_600_000_000_000
            refs = [f.get("ref") for f in frames]
            assert refs == ([f"r{i}" for i in range(5)] if ws is a else [None] * 5)


async def test_publish_without_ref_has_no_ref(server: ServerProcess, mint: Mint, item: str) -> None:
    ws, _ = await join(server, item, mint())
    async with ws:
        await send_json(ws, {"type": "publish", "data": None})
        frame = await recv_type(ws, "message")
        assert "ref" not in frame and frame["data"] is None


async def test_seq_continues_for_a_later_member(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    a, _ = await join(server, item, mint("alice"))
    async with a:
        for i in range(3):
            await send_json(a, {"type": "publish", "data": i, "ref": str(i)})
        await recv_type(a, "message"), await recv_type(a, "message"), await recv_type(a, "message")
        b, wb = await join(server, item, mint("bob"))
        async with b:
            assert wb["seq"] == 3
            await send_json(b, {"type": "publish", "data": "next"})
            assert (await recv_type(b, "message"))["seq"] == 4
            assert (await recv_type(a, "message"))["seq"] == 4


async def test_presence_join_and_leave(server: ServerProcess, mint: Mint, item: str) -> None:
    a, _ = await join(server, item, mint("alice"))
    async with a:
        b, wb = await join(server, item, mint("bob"))
        joined = await recv_json(a)
        assert joined == {
            "type": "presence",
            "item_id": item,
            "event": "join",
            "user": "bob",
            "client_id": wb["client_id"],
        }
        await b.close()
        left = await recv_json(a)
        assert left == {**joined, "event": "leave"}


async def test_nobody_receives_its_own_join(server: ServerProcess, mint: Mint, item: str) -> None:
    a, _ = await join(server, item, mint("alice"))
    async with a:
        await send_json(a, {"type": "ping"})
        assert await recv_json(a) == {"type": "pong"}


async def test_leave_is_sent_when_a_client_drops_without_closing(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    a, _ = await join(server, item, mint("alice"))
    async with a:
        b, wb = await join(server, item, mint("bob"))
        await recv_type(a, "presence")
        # Tear the TCP connection down with a reset: no close frame, no FIN handshake.
        sock = b.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        b.transport.abort()
        left = await recv_type(a, "presence")
        assert left["event"] == "leave" and left["client_id"] == wb["client_id"]


async def test_rooms_are_isolated(server: ServerProcess, mint: Mint, item: str) -> None:
    other = item + "-other"
    a, _ = await join(server, item, mint("alice"))
    x, _ = await join(server, other, mint("xavier"))
    async with a, x:
        await send_json(a, {"type": "publish", "data": "for item only"})
        await send_json(x, {"type": "publish", "data": "for other only"})
        got_a = await recv_type(a, "message")
        got_x = await recv_type(x, "message")
        assert got_a["data"] == "for item only" and got_a["seq"] == 1
        assert got_x["data"] == "for other only" and got_x["seq"] == 1
        # Nothing else is pending for either: a ping is answered next.
        for ws in (a, x):
            await send_json(ws, {"type": "ping"})
            assert await recv_json(ws) == {"type": "pong"}


async def expect_error(ws: ClientConnection, raw: str | bytes, code: str, ref: Any = None) -> None:
    await ws.send(raw)
    frame = await recv_json(ws)
    assert frame["type"] == "error" and frame["code"] == code, frame
    assert frame.get("ref") == ref
    assert isinstance(frame["detail"], str) and frame["detail"]


async def test_bad_frames_get_error_frames_and_the_connection_stays(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    ws, _ = await join(server, item, mint())
    async with ws:
        await expect_error(ws, "{not json", "invalid_json")
        await expect_error(ws, "[1, 2]", "invalid_frame")
        await expect_error(ws, '"publish"', "invalid_frame")
        await expect_error(ws, '{"type": "dance", "ref": "x1"}', "unknown_type", "x1")
        await expect_error(ws, '{"data": 1}', "unknown_type")
        await expect_error(ws, '{"type": "publish", "ref": "x2"}', "invalid_frame", "x2")
        await expect_error(ws, '{"type": "publish", "data": 1, "ref": 7}', "invalid_frame")
        await expect_error(
            ws, '{"type": "publish", "data": 1, "ref": "' + "r" * 200 + '"}', "invalid_frame"
        )
        await send_json(ws, {"type": "publish", "data": "still here", "ref": "ok"})
        frame = await recv_json(ws)
        assert frame["type"] == "message" and frame["seq"] == 1 and frame["ref"] == "ok"


async def test_publish_needs_write_scope(server: ServerProcess, mint: Mint, item: str) -> None:
    reader, _ = await join(server, item, mint("reader", scope=["items:read"]))
    async with reader:
        await expect_error(reader, '{"type": "publish", "data": 1, "ref": "w"}', "not_allowed", "w")
        await expect_error(reader, b"\x00\x01", "not_allowed")
        writer, _ = await join(server, item, mint("writer"))
        async with writer:
            await send_json(writer, {"type": "publish", "data": "hi"})
            frame = await recv_type(reader, "message")
            assert frame["seq"] == 1  # the refused publish took no seq


async def test_ping_pong(server: ServerProcess, mint: Mint, item: str) -> None:
    ws, _ = await join(server, item, mint())
    async with ws:
        for _ in range(3):
            await send_json(ws, {"type": "ping"})
            assert await recv_json(ws) == {"type": "pong"}


async def test_binary_frames_are_relayed_to_the_others_unchanged(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    a, _ = await join(server, item, mint("alice"))
    b, _ = await join(server, item, mint("bob"))
    async with a, b:
        await recv_type(a, "presence")
        payload = bytes(range(256)) * 4
        await a.send(payload)
        assert await asyncio.wait_for(b.recv(), TIMEOUT) == payload
        # Not echoed to the sender, not sequenced: the sender's next frame is its pong,
        # and the next message still has seq 1.
        await send_json(a, {"type": "ping"})
        assert await recv_json(a) == {"type": "pong"}
        await send_json(a, {"type": "publish", "data": "after"})
        assert (await recv_json(b))["seq"] == 1


async def test_per_message_deflate_is_off(server: ServerProcess, mint: Mint, item: str) -> None:
    """Offered by the client (the websockets library offers it by default), declined
    by the server: compression roughly doubles memory per connection."""
    ws, _ = await join(server, item, mint())
    async with ws:
        assert ws.request is not None and "permessage-deflate" in ws.request.headers.get(
            "Sec-WebSocket-Extensions", ""
        )
        assert ws.protocol.extensions == []


async def test_a_live_connection_is_closed_when_its_token_expires(
    start_server: Callable[..., ServerProcess], mint: Mint, item: str
) -> None:
    server = start_server(jwt_leeway_s=0)
    watcher, _ = await join(server, item, mint("watcher"))
    async with watcher:
        expiring, welcome = await join(server, item, mint("brief", ttl_s=3))
        await recv_type(watcher, "presence")
        assert await closed_with(expiring, timeout=10) == (1008, "token_expired")
        left = await recv_type(watcher, "presence")
        assert (left["event"], left["client_id"]) == ("leave", welcome["client_id"])
