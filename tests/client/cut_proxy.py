"""A TCP proxy in front of a real server that can lose what the server says, then cut.

Between them, ``hold()`` and ``cut()`` stage the fault that exactly-once publishing is
for: the client's publish reaches the server and is stored, the acknowledgement is lost
on the way back, and the connection dies without a close frame (the client sees 1006).
Connections made after the cut pass through untouched, so the client can reconnect
through the same address. It forwards bytes, so HTTP (a page, its scripts) works too.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

CHUNK = 65536


class CutProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.connections = 0
        """How many client connections it has accepted (HTTP ones included)."""
        self._holding = False
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, item_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/items/{item_id}/ws"

    def hold(self) -> None:
        """From now on, drop every byte the server sends on the open connections."""
        self._holding = True

    def cut(self) -> None:
        """Abort every open connection, both ways (no close frame); stop holding."""
        for client, server in list(self._pairs):
            client.transport.abort()
            server.transport.abort()
        self._pairs.clear()
        self._holding = False

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, downstream: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(CHUNK):
                if downstream and self._holding:
                    continue  # lost on the way back
                writer.write(chunk)
                await writer.drain()
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            writer.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.transport.abort()
            return
        pair = (client_w, server_w)
        self._pairs.add(pair)
        try:
            await asyncio.gather(
                self._pipe(client_r, server_w, downstream=False),
                self._pipe(server_r, client_w, downstream=True),
            )
        finally:
            self._pairs.discard(pair)

    @asynccontextmanager
    async def running(self) -> AsyncIterator["CutProxy"]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self.cut()
            server.close()
            await server.wait_closed()
