"""A scripted stand-in for an itemrooms server, for client tests that need the server to
say exactly one thing at exactly one moment (``outcome_unknown``, a ``duplicate`` copy,
a 1012 close, a replay carrying an id) — which a real server only does under faults.

A real WebSocket server (``websockets.asyncio.server``) on a free loopback port: each
connection is welcomed at once with ``FakeServer.welcome`` (what a real server's first
frame is), then handed to the test as a :class:`FakeConnection`, which reads the
client's frames and sends whatever the test scripts. Every wait is bounded.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

WAIT = 5.0
Frame = dict[str, Any]


def welcome_frame(
    seq: int = 0,
    *,
    epoch: str | None = "epoch-1",
    recovered: bool = True,
    user: str = "alice",
    client_id: str = "c_fake",
    item_id: str = "42",
) -> Frame:
    frame: Frame = {
        "type": "welcome",
        "item_id": item_id,
        "client_id": client_id,
        "user": user,
        "members": [],
        "seq": seq,
        "recovered": recovered,
    }
    if epoch is not None:
        frame["epoch"] = epoch
    return frame


def message_frame(seq: int, data: Any = None, *, user: str = "alice", **fields: Any) -> Frame:
    """A message frame as the server sends it; ``fields`` adds ``id``, ``ref``, ``duplicate``."""
    frame: Frame = {
        "type": "message",
        "item_id": "42",
        "seq": seq,
        "ts": 1_732_712_345_678 + seq,
        "sender": {"user": user, "client_id": "c_other" if user != "alice" else "c_fake"},
        "data": data,
    }
    frame.update(fields)
    return frame


class FakeConnection:
    """One client connection, as the test sees it from the server's side."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        assert ws.request is not None
        self.path = ws.request.path
        query = parse_qs(urlsplit(self.path).query)
        self.query = {k: v[-1] for k, v in query.items()}
        """The handshake's query: ``since`` and ``epoch`` when the client resumes."""
        self.done = asyncio.Event()

    async def send(self, frame: Frame) -> None:
        await self.ws.send(json.dumps(frame))

    async def recv(self, timeout: float = WAIT) -> Frame:
        """The client's next text frame (pings answered on the way, as a server does)."""
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
            assert isinstance(raw, str), raw
            frame: Frame = json.loads(raw)
            if frame.get("type") == "ping":
                await self.send({"type": "pong"})
                continue
            return frame

    async def recv_publish(self, timeout: float = WAIT) -> Frame:
        frame = await self.recv(timeout)
        assert frame["type"] == "publish", frame
        return frame

    async def close(self, code: int = 1001, reason: str = "going_away") -> None:
        await self.ws.close(code, reason)
        self.done.set()

    def cut(self) -> None:
        """Drop the TCP connection without a close frame (1006 for the client)."""
        self.ws.transport.abort()
        self.done.set()

    async def closed_by_client(self, timeout: float = WAIT) -> None:
        """Until the client closes the connection (bounded)."""
        try:
            await asyncio.wait_for(self.ws.recv(), timeout)
        except ConnectionClosed:
            return
        raise AssertionError("expected the client to close, got a frame")


def _select_subprotocol(ws: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """``itemrooms.v1`` when offered (a browser offers it next to its token), as the server."""
    return Subprotocol("itemrooms.v1") if "itemrooms.v1" in offered else None


class FakeServer:
    """Serve ``ws://127.0.0.1:PORT/items/42/ws``; ``accept()`` the connections in turn."""

    def __init__(self) -> None:
        self.welcomes: list[Frame] = []
        """Welcomes for the next connections, in order; when empty, ``welcome_frame()``."""
        self.admit = asyncio.Event()
        """Cleared: new connections wait for their welcome until it is set again."""
        self.admit.set()
        self._connections: asyncio.Queue[FakeConnection] = asyncio.Queue()
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/items/42/ws"

    async def accept(self, timeout: float = WAIT) -> FakeConnection:
        """The next connection, already welcomed."""
        return await asyncio.wait_for(self._connections.get(), timeout)

    async def _handle(self, ws: ServerConnection) -> None:
        connection = FakeConnection(ws)
        await asyncio.wait_for(self.admit.wait(), WAIT)
        await connection.send(self.welcomes.pop(0) if self.welcomes else welcome_frame())
        self._connections.put_nowait(connection)
        # Live until the test closes or cuts it, or the client goes.
        closed = asyncio.ensure_future(ws.wait_closed())
        done = asyncio.ensure_future(connection.done.wait())
        try:
            await asyncio.wait({closed, done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            done.cancel()

    @asynccontextmanager
    async def running(self) -> AsyncIterator["FakeServer"]:
        async with serve(
            self._handle,
            "127.0.0.1",
            0,
            select_subprotocol=_select_subprotocol,
            ping_interval=None,
            compression=None,
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            yield self
