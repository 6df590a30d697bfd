"""No client can hold up a room: one member stops reading, the others still get
everything, and the stalled one is closed with 1013 ``slow_consumer``."""

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from tests.conftest import Mint, assert_healthy
from tests.support.client import TIMEOUT, drain_until_closed, join, recv_json, send_json
from tests.support.server import ServerProcess

SEND_QUEUE = 16
PAYLOAD = "x" * 32_000
MAX_MESSAGES = 3000  # a bound: kernel buffers fill long before this


async def test_a_member_that_stops_reading_is_closed_and_the_room_goes_on(
    start_server: Callable[..., ServerProcess], mint: Mint, item: str
) -> None:
    server = start_server(send_queue=SEND_QUEUE)
    publisher, _ = await join(server, item, mint("publisher"))
    watcher, _ = await join(server, item, mint("watcher"))
    # The slow member: a tiny receive buffer, and a client queue of one frame, so
    # that not reading quickly backs up into the server.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    slow, slow_welcome = await join(server, item, mint("slow"), sock=sock, max_queue=1)

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
                assert frame["client_id"] == slow_welcome["client_id"]
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

    # The stalled member reads again: it finds what was already on the wire, then the close.
    frames, code, reason = await drain_until_closed(slow, timeout=30)
    assert (code, reason) == (1013, "slow_consumer")
    assert len(frames) < sent
    await publisher.close()
    await watcher.close()
    await assert_healthy(server)
