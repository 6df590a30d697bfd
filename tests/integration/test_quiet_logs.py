"""Client mistakes never reach the error log: a text frame that is not UTF-8 and a
malformed HTTP request each get their documented answer (1007, 400) and log nothing
above INFO, however many a client sends (uvicorn logged each at ERROR with a traceback,
or at WARNING)."""

import asyncio

from tests.conftest import Mint, assert_healthy
from tests.support.client import closed_with, join
from tests.support.server import ServerProcess

ATTEMPTS = 20


async def garbage_request(server: ServerProcess) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\nBad Header Line\r\n\r\n")
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def test_client_mistakes_log_nothing_above_info(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    logged = len(server.lines)
    for _ in range(ATTEMPTS):
        ws, _ = await join(server, item, mint())
        await ws.send(b"\xff\xfe not utf-8", text=True)
        assert await closed_with(ws) == (1007, "")
        answer = await garbage_request(server)
        assert answer.startswith(b"HTTP/1.1 400 "), answer
    await assert_healthy(server)
    noisy = [
        line
        for line in server.lines[logged:]
        if line.startswith(("WARNING", "ERROR", "CRITICAL", "Traceback"))
    ]
    assert not noisy, noisy
