"""No client can hold up a room: one member stops reading, the others still get
everything, and the stalled one is closed with 1013 ``slow_consumer``."""

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection

from tests.conftest import Mint, assert_healthy
from tests.support.client import TIMEOUT, drain_until_closed, join, recv_json, send_json
from tests.support.server import ServerProcess

SEND_QUEUE = 16
PAYLOAD = "x" * 32_000
MAX_MESSAGES = 3000  # a bound: kernel buffers fill long before this


async def join_slow(server: ServerProcess, item: str, mint: Mint) -> tuple[ClientConnection, str]:
    """A member that will not read: a tiny receive buffer, and a client queue of one
    frame, so that not reading quickly backs up into the server."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    slow, welcome = await join(server, item, mint("slow"), sock=sock, max_queue=1)
    return slow, welcome["client_id"]


async def watch_join(watcher: ClientConnection, slow_id: str) -> None:
    """The watcher is told of the slow member (presence comes in batches: one that came
    and went within a batch would never be mentioned, its leave neither)."""
    joined = await recv_json(watcher, timeout=TIMEOUT)
    assert (joined["type"], joined["event"], joined["client_id"]) == ("presence", "join", slow_id)


async def publish_until_evicted(
    publisher: ClientConnection, watcher: ClientConnection, slow_id: str
) -> int:
    """Publish (each waiting for its ack) until the watcher sees the slow member
    leave, and a few more; check the watcher got every message; return how many."""
    seen: list[int] = []
    progress = asyncio.Condition()
    slow_left = asyncio.Event()

    async def watch() -> None:
        while True:
            frame: dict[str, Any] = await recv_json(watcher, timeout=TIMEOUT)
            if frame["type"] == "message":
                async with progress:
                    seen.append(frame["seq"])
                    progress.notify_all()
            elif frame["type"] == "presence" and frame["event"] == "leave":
                assert frame["client_id"] == slow_id
                slow_left.set()

    watching = asyncio.create_task(watch())
    try:
        sent = 0
        extra_after_leave = 20
        while sent < MAX_MESSAGES and extra_after_leave:
            await send_json(publisher, {"type": "publish", "data": PAYLOAD, "ref": str(sent)})
            while True:  # wait for our own ack, so the publisher never outruns the room
                frame = await recv_json(publisher)
                if frame.get("ref") == str(sent):
                    break
            sent += 1
            if slow_left.is_set():
                extra_after_leave -= 1
        if watching.done():
            watching.result()  # the watcher failed: show why, not a misleading symptom
        assert slow_left.is_set(), "the slow member was never closed"
        async with progress:
            await asyncio.wait_for(progress.wait_for(lambda: len(seen) >= sent), TIMEOUT)
        assert seen == list(range(1, sent + 1)), "the watcher missed or reordered messages"
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
    return sent


async def test_a_member_that_stops_reading_is_closed_and_the_room_goes_on(
    start_server: Callable[..., ServerProcess], mint: Mint, item: str
) -> None:
    server = start_server(send_queue=SEND_QUEUE)
    publisher, _ = await join(server, item, mint("publisher"))
    watcher, _ = await join(server, item, mint("watcher"))
    slow, slow_id = await join_slow(server, item, mint)
    await watch_join(watcher, slow_id)
    sent = await publish_until_evicted(publisher, watcher, slow_id)
    # The stalled member reads again: it finds what was already on the wire, then the close.
    frames, code, reason = await drain_until_closed(slow, timeout=30)
    assert (code, reason) == (1013, "slow_consumer")
    assert len(frames) < sent
    await publisher.close()
    await watcher.close()
    await assert_healthy(server)


async def test_the_slow_consumer_close_is_not_overtaken_by_the_keepalive(
    start_server: Callable[..., ServerProcess], mint: Mint, item: str
) -> None:
    """A member that stays silent past the ping timeout still learns why it was closed:
    the 1013 goes out at eviction, behind what its socket holds, not after a drain."""
    server = start_server(send_queue=SEND_QUEUE, ping_interval_s=0.5, ping_timeout_s=0.5)
    publisher, _ = await join(server, item, mint("publisher"))
    watcher, _ = await join(server, item, mint("watcher"))
    slow, slow_id = await join_slow(server, item, mint)
    await watch_join(watcher, slow_id)
    await publish_until_evicted(publisher, watcher, slow_id)
    await asyncio.sleep(2.0)  # the behaviour under test: pings go unanswered meanwhile
    _, code, reason = await drain_until_closed(slow, timeout=30)
    assert (code, reason) == (1013, "slow_consumer")
    await publisher.close()
    await watcher.close()
    await assert_healthy(server)
