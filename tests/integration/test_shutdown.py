"""Shutdown is bounded even when a client never reads (uvicorn's graceful-shutdown
timeout), and connected clients are told with a close frame."""

import asyncio
import signal
import socket
import time
from collections.abc import Callable

import pytest

from tests.conftest import Mint
from tests.support.client import drain_until_closed, join, open_room, recv_type, send_json
from tests.support.server import ServerProcess

SHUTDOWN_TIMEOUT_S = 2


async def test_shutdown_is_bounded_with_a_client_that_never_reads(
    start_server: Callable[..., ServerProcess], mint: Mint, item: str
) -> None:
    server = start_server(shutdown_timeout_s=SHUTDOWN_TIMEOUT_S, send_queue=100_000)
    publisher, _ = await join(server, item, mint("publisher"))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    stalled, _ = await join(server, item, mint("stalled"), sock=sock, max_queue=1)
    # Fill the stalled client's socket and the server's buffers toward it.
    for i in range(300):
        await send_json(publisher, {"type": "publish", "data": "x" * 32_000, "ref": str(i)})
        while (await recv_type(publisher, "message")).get("ref") != str(i):
            pass
    started = time.monotonic()
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    # The reading client is told the server is going away...
    _, close_code, reason = await drain_until_closed(publisher)
    assert (close_code, reason) == (1001, "going_away")
    # ...and while the stalled one holds the drain open, a new handshake is refused.
    with pytest.raises(OSError):
        await open_room(server, item, mint("late"))
    assert server.process.poll() is None, "the drain should still be waiting for the stalled client"
    code = await asyncio.to_thread(server.process.wait, SHUTDOWN_TIMEOUT_S + 10)
    elapsed = time.monotonic() - started
    assert code in (0, -signal.SIGTERM), server.output  # uvicorn re-raises the signal
    assert elapsed < SHUTDOWN_TIMEOUT_S + 10
    assert "Application shutdown complete" in server.output
    stalled.transport.abort()


async def test_sigterm_drains_every_client_with_going_away(
    start_redis_server: Callable[..., ServerProcess], mint: Mint, item: str
) -> None:
    """Across processes: the draining process's clients get 1001, the others see them
    leave, nothing acknowledged is lost, and a handshake during the drain is refused."""
    draining, staying = start_redis_server(), start_redis_server()
    clients = [await join(draining, item, mint(f"d{i}")) for i in range(5)]
    watcher, _ = await join(staying, item, mint("watcher"))
    for ws, _ in clients:
        await send_json(ws, {"type": "publish", "data": "acked", "ref": "a"})
        while (await recv_type(ws, "message")).get("ref") != "a":
            pass
    assert draining.process is not None
    draining.process.send_signal(signal.SIGTERM)
    for ws, _ in clients:
        _, code, reason = await drain_until_closed(ws)
        assert (code, reason) == (1001, "going_away")
    code = await asyncio.to_thread(draining.process.wait, SHUTDOWN_TIMEOUT_S + 10)
    assert code in (0, -signal.SIGTERM)
    async with watcher:
        left = set()
        while len(left) < 5:
            frame = await recv_type(watcher, "presence")
            if frame["event"] == "leave":
                left.add(frame["client_id"])
        assert left == {welcome["client_id"] for _, welcome in clients}
    resumed, welcome = await join(staying, item, mint("late"), since=0)
    async with resumed:
        assert welcome["seq"] == 5 and welcome["recovered"]
