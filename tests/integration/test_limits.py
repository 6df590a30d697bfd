"""Limits, each seen by a real client as its close code and reason, with the server
and the other rooms healthy afterwards (tests of a hostile or broken client)."""

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable

import pytest
from websockets.exceptions import ConnectionClosed

from itemrooms.api.rate_limit import STRIKES
from tests.conftest import Mint, assert_healthy
from tests.support.client import (
    closed_with,
    drain_until_closed,
    join,
    open_room,
    recv_json,
    recv_type,
    send_json,
)
from tests.support.server import ServerProcess

Starter = Callable[..., ServerProcess]
WS_HEADERS = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nHost: 127.0.0.1\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


async def test_a_frame_over_the_limit_closes_with_1009(
    start_server: Starter, mint: Mint, item: str
) -> None:
    server = start_server(max_message_bytes=1024)
    bystander, _ = await join(server, item, mint("bystander"))
    ws, _ = await join(server, item, mint())
    await ws.send(json.dumps({"type": "publish", "data": "x" * 2000}))
    assert await closed_with(ws) == (1009, "message_too_big")
    big_binary, _ = await join(server, item, mint())
    await big_binary.send(b"y" * 2000)
    assert await closed_with(big_binary) == (1009, "message_too_big")
    async with bystander:  # the room goes on
        await send_json(bystander, {"type": "publish", "data": "x" * 900})
        while (frame := await recv_json(bystander))["type"] != "message":
            pass
        assert frame["seq"] == 1
    await assert_healthy(server)


async def test_a_publish_flood_gets_error_frames_then_a_close(
    start_server: Starter, mint: Mint, item: str
) -> None:
    # One publish a second: the flood below takes far less than a second to send,
    # however loaded the machine, so only the first one or two can pass.
    server = start_server(rate_limit=1, rate_burst=1)
    ws, _ = await join(server, item, mint())
    for i in range(60):
        await send_json(ws, {"type": "publish", "data": i, "ref": str(i)})
    frames, code, reason = await drain_until_closed(ws)
    decoded = [json.loads(f) for f in frames]
    published = [f for f in decoded if f["type"] == "message"]
    refused = [f for f in decoded if f["type"] == "error"]
    assert 1 <= len(published) <= 3  # the burst, and what refilled meanwhile
    assert refused and all(f["code"] == "rate_limited" for f in refused)
    assert (code, reason) == (1008, "rate_limited")
    await assert_healthy(server)


FLOOD = 2000
FLOODS = {
    "ping": lambda mint: '{"type": "ping"}',
    "refresh": lambda mint: json.dumps({"type": "refresh", "token": mint()}),
    "malformed": lambda mint: "{not json",
    "unknown type": lambda mint: '{"type": "nothing"}',
}


@pytest.mark.parametrize("kind", list(FLOODS))
async def test_a_flood_of_any_frame_is_refused_then_closed(
    start_server: Starter, mint: Mint, item: str, kind: str
) -> None:
    """Every frame counts against ITEMROOMS_FRAME_RATE_LIMIT (default 100/s at the
    default publish rate), a refresh as 20: 2,000 of them cost at most a few hundred
    answers (and a few signature checks), then 1008 rate_limited."""
    server = start_server(rate_limit=50)  # the defaults: 50 publishes, 100 frames a second
    bystander, _ = await join(server, f"{item}-other", mint("bystander"))
    ws, _ = await join(server, item, mint())
    frame = FLOODS[kind](mint)
    with contextlib.suppress(ConnectionClosed):  # the close may come before the last
        for _ in range(FLOOD):
            await ws.send(frame)
    frames, code, reason = await drain_until_closed(ws, timeout=10)
    assert (code, reason) == (1008, "rate_limited")
    decoded = [json.loads(f) for f in frames]
    refused = [f for f in decoded if f.get("code") == "rate_limited"]
    answered = [f for f in decoded if f.get("code") != "rate_limited"]
    assert 1 <= len(refused) <= STRIKES + 1
    # The burst (100 frames) and what refilled while the flood went on.
    assert len(answered) <= (15 if kind == "refresh" else 300), len(answered)
    async with bystander:  # another room, same process: unharmed
        await send_json(bystander, {"type": "publish", "data": "still here", "ref": "b"})
        assert (await recv_type(bystander, "message"))["ref"] == "b"
    await assert_healthy(server)


async def test_frames_within_the_frame_rate_are_all_answered(
    start_server: Starter, mint: Mint, item: str
) -> None:
    server = start_server(rate_limit=50)
    ws, _ = await join(server, item, mint())
    async with ws:
        for _ in range(90):  # within the burst of 100
            await send_json(ws, {"type": "ping"})
        assert [(await recv_json(ws))["type"] for _ in range(90)] == ["pong"] * 90


def test_a_frame_rate_below_the_publish_rate_is_refused_at_startup(
    start_server: Starter,
) -> None:
    with pytest.raises(RuntimeError, match="ITEMROOMS_FRAME_RATE_LIMIT counts every frame"):
        start_server(rate_limit=200, frame_rate_limit=150)


async def test_publishing_within_the_rate_is_never_refused(
    start_server: Starter, mint: Mint, item: str
) -> None:
    server = start_server(rate_limit=1000)
    ws, _ = await join(server, item, mint())
    async with ws:
        for i in range(50):
            await send_json(ws, {"type": "publish", "data": i})
        assert [(await recv_json(ws))["seq"] for _ in range(50)] == list(range(1, 51))


async def test_json_nested_too_deep_is_an_error_frame(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    ws, _ = await join(server, item, mint())
    async with ws:
        deep: object = "leaf"
        for _ in range(40):
            deep = [deep]
        await send_json(ws, {"type": "publish", "data": deep, "ref": "deep"})
        frame = await recv_json(ws)
        assert (frame["type"], frame["code"], frame["ref"]) == ("error", "too_deep", "deep")
        await ws.send("[" * 5000 + "]" * 5000)  # beyond any parser's recursion limit
        assert (await recv_json(ws))["code"] == "invalid_json"
        shallow: object = "leaf"
        for _ in range(31):
            shallow = [shallow]
        await send_json(ws, {"type": "publish", "data": shallow})
        assert (await recv_json(ws))["type"] == "message"


async def test_connections_per_user_are_capped(
    start_server: Starter, mint: Mint, item: str
) -> None:
    server = start_server(max_connections_per_user=2)
    first, _ = await join(server, item, mint("greedy"))
    second, _ = await join(server, item + "-2", mint("greedy"))
    third = await open_room(server, item, mint("greedy"))
    assert await closed_with(third) == (1013, "too_many_connections")
    other, _ = await join(server, item, mint("modest"))  # other users are not affected
    await second.close()
    again, _ = await join(server, item, mint("greedy"))  # a slot freed by a leave
    for ws in (first, other, again):
        await ws.close()
    await assert_healthy(server)


async def test_connections_per_process_are_capped(
    start_server: Starter, mint: Mint, item: str
) -> None:
    server = start_server(max_connections=2)
    held = [(await join(server, item, mint(f"u{i}")))[0] for i in range(2)]
    over = await open_room(server, item, mint("late"))
    assert await closed_with(over) == (1013, "too_many_connections")
    assert server.get("/healthz").status_code == 200  # health checks are not connections
    await held[0].close()
    ws, _ = await join(server, item, mint("late"))
    for open_ws in (held[1], ws):
        await open_ws.close()


async def test_a_peer_that_does_not_answer_pings_is_dropped(
    start_server: Starter, mint: Mint, item: str
) -> None:
    server = start_server(ping_interval_s=0.5, ping_timeout_s=0.5)
    sock = socket.create_connection(("127.0.0.1", server.port))
    request = f"GET /items/{item}/ws HTTP/1.1\r\nAuthorization: Bearer {mint()}\r\n".encode()
    sock.sendall(request + WS_HEADERS + b"\r\n")
    sock.settimeout(10)
    started = time.monotonic()
    received = b""
    while chunk := await asyncio.to_thread(sock.recv, 65536):  # never answers a ping
        received += chunk
    sock.close()
    assert received.startswith(b"HTTP/1.1 101")
    assert time.monotonic() - started < 5
    await assert_healthy(server)


def raw_exchange(port: int, payload: bytes, timeout: float = 2.0) -> bytes:
    """Send ``payload`` and return what comes back before the server closes."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(timeout)
        sock.sendall(payload)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError as exc:
            raise AssertionError(
                f"no answer and no close within {timeout} s: {received[:80]!r}"
            ) from exc
    return received


@pytest.mark.parametrize(
    ("name", "payload", "status"),
    [
        (
            "request line over 8 KiB",
            b"GET /items/a/ws?x=" + b"a" * 9000 + b" HTTP/1.1\r\n" + WS_HEADERS + b"\r\n",
            b"414",
        ),
        (
            "200 headers",
            b"GET /items/a/ws HTTP/1.1\r\n"
            + WS_HEADERS
            + b"".join(b"X-%d: v\r\n" % i for i in range(200))
            + b"\r\n",
            b"431",
        ),
        (
            "a header over 8 KiB",
            b"GET /items/a/ws HTTP/1.1\r\n" + WS_HEADERS + b"X-Big: " + b"v" * 9000 + b"\r\n\r\n",
            b"431",
        ),
        (
            "not HTTP at all",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 100 + b"\r\n\r\n",
            b"400",
        ),
    ],
)
def test_malformed_handshakes_are_answered_within_two_seconds(
    server: ServerProcess, name: str, payload: bytes, status: bytes
) -> None:
    answer = raw_exchange(server.port, payload)
    assert answer.startswith(b"HTTP/1.1 " + status), (name, answer[:80])
    assert server.get("/healthz").status_code == 200


async def test_a_storm_of_bad_tokens_is_refused_one_by_one(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    async def attempt(i: int) -> tuple[str, object]:
        if i % 10 == 0:
            ws = await open_room(server, item, "bad." + str(i) + ".token")
            return "bad", await closed_with(ws, timeout=20)
        ws, welcome = await join(server, item, mint(f"u{i}"))
        await ws.close()
        return "good", welcome["type"]

    results = await asyncio.gather(*(attempt(i) for i in range(200)))
    assert {r for kind, r in results if kind == "bad"} == {(1008, "invalid_token")}
    assert {r for kind, r in results if kind == "good"} == {"welcome"}
    await assert_healthy(server)
