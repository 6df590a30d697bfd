"""Shutdown is bounded even when a client never reads (uvicorn's graceful-shutdown
timeout), and connected clients are told with a close frame."""

import asyncio
import signal
import socket
import time
from collections.abc import Callable

from tests.conftest import Mint
from tests.support.client import drain_until_closed, join, recv_type, send_json
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
    code = await asyncio.to_thread(server.process.wait, SHUTDOWN_TIMEOUT_S + 10)
    elapsed = time.monotonic() - started
    assert code in (0, -signal.SIGTERM), server.output  # uvicorn re-raises the signal
    assert elapsed < SHUTDOWN_TIMEOUT_S + 10
    assert "Application shutdown complete" in server.output
    # The reading client was told the server is going away with a close frame.
    _, close_code, _ = await drain_until_closed(publisher)
    assert close_code in (1001, 1012)
    stalled.transport.abort()
