"""A reconnecting WebSocket client speaking the wire protocol directly.

Reconnects as the mobile guide says, only faster (the kit's faults are short):
exponential backoff with jitter from 0.1 s, capped at 1 s, reset after a
``welcome``. Like a client behind a load balancer, it moves to the next process
after a close or a failed connect; after 1012 ``epoch_changed`` it reconnects at
once to the same one. Subclasses handle the session (reader: log what arrives;
publisher: publish and settle).
"""

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from chaos.ledger import clip
from chaos.room import Room

OPEN_TIMEOUT_S = 5.0
WELCOME_TIMEOUT_S = 10.0
BACKOFF_START_S, BACKOFF_CAP_S = 0.1, 1.0
# 1008 is final for a real app; here it means the kit's token or configuration is wrong.
FATAL_CODES = {1008}


@dataclass
class Span:
    """One welcomed connection: who it was, where, and when it was open."""

    client_id: str
    user: str
    process: int
    opened: float
    closed: float | None = None


@dataclass(frozen=True)
class Close:
    at: float
    process: int
    connection: int
    code: int | None  # None: the connection failed before or without a close frame
    reason: str


class Client:
    def __init__(self, name: str, token: str, room: Room, home: int) -> None:
        self.name = name
        self.token = token
        self.room = room
        self.process = home % len(room.processes)
        self.connection = 0  # connections opened so far
        self.client_id: str | None = None  # set while welcomed and open
        self.epoch: str | None = None
        self.closes: list[Close] = []
        self.user: str | None = None  # the token's sub, from the first welcome
        self.members: dict[str, str] = {}  # this client's view: client_id -> user
        self.spans: list[Span] = []
        self.leaves: list[tuple[float, str]] = []  # (when, user) of leave events seen
        self._ws: ClientConnection | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._welcomed = asyncio.Event()

    # --- what subclasses provide ---------------------------------------------

    def query(self) -> str:
        return ""

    def on_welcome(self, frame: dict[str, Any]) -> None:
        pass

    async def session(self, ws: ClientConnection) -> None:
        raise NotImplementedError

    def on_closed(self) -> None:
        pass

    # --- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def welcomed(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._welcomed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Close with 1000 and end the reconnect loop."""
        self._stopping = True
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 10)
            except TimeoutError:
                self._task.cancel()

    def kill_connection(self) -> None:
        """Drop the TCP connection without a close frame (the kit gave up waiting)."""
        if self._ws is not None:
            self._ws.transport.abort()

    # --- the loop -------------------------------------------------------------

    async def _run(self) -> None:
        delay = BACKOFF_START_S
        while not self._stopping:
            code, welcomed = await self._connect_once()
            if self._stopping:
                return
            if welcomed:
                delay = BACKOFF_START_S
            if code == 1012:
                continue  # epoch_changed: resume at once, same process
            self.process = (self.process + 1) % len(self.room.processes)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # backoff: a real pause
            delay = min(delay * 2, BACKOFF_CAP_S)

    async def _connect_once(self) -> tuple[int | None, bool]:
        server = self.room.processes[self.process]
        self.connection += 1
        if self.connection > 1:
            self.room.ledger.reconnects += 1
        url = server.ws_url(self.room.item_id, self.query())
        code, reason, welcomed = None, "", False
        try:
            async with connect(
                url,
                additional_headers={"Authorization": f"Bearer {self.token}"},
                open_timeout=OPEN_TIMEOUT_S,
                close_timeout=2,
                ping_interval=5,
                ping_timeout=20,  # longer than any pause the kit injects
                max_size=None,
            ) as ws:
                self._ws = ws
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), WELCOME_TIMEOUT_S))
                if frame.get("type") != "welcome":
                    self.room.ledger.violation(
                        f"{self.name}: first frame is not a welcome: {clip(frame)}"
                    )
                    return None, False
                welcomed = True
                self._welcome(frame)
                try:
                    await self.session(ws)
                finally:  # a 1000/1001 close ends the session without an exception
                    code, reason = ws.close_code, ws.close_reason or ""
        except ConnectionClosed as closed:
            if closed.rcvd is not None:
                code, reason = closed.rcvd.code, closed.rcvd.reason
            else:
                code, reason = 1006, "no close frame"
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            self._ws = None
            self.client_id = None
            if welcomed:
                self.spans[-1].closed = time.monotonic()
            self.on_closed()
        self.closes.append(Close(time.monotonic(), self.process, self.connection, code, reason))
        if code in FATAL_CODES and not self._stopping:
            self.room.ledger.violation(f"{self.name}: closed with {code} {reason} on {server.name}")
        return code, welcomed

    def _welcome(self, frame: dict[str, Any]) -> None:
        self.client_id, self.user = frame["client_id"], frame["user"]
        self.spans.append(Span(frame["client_id"], frame["user"], self.process, time.monotonic()))
        self.epoch = frame.get("epoch")
        self.members = {m["client_id"]: m["user"] for m in frame.get("members", [])}
        self.on_welcome(frame)
        self._welcomed.set()

    def on_presence(self, frame: dict[str, Any]) -> None:
        if frame.get("event") == "join":
            self.members[frame["client_id"]] = frame["user"]
        elif frame.get("event") == "leave":
            # A user is one member (PROTOCOL v1.2): its leave follows its last connection.
            self.members.pop(frame["client_id"], None)
            self.leaves.append((time.monotonic(), frame["user"]))
