"""One connection's outbox: frames go straight to the socket while it keeps up, and
to a bounded queue, drained by a writer task, while it does not.

Broadcast never awaits a socket. While the socket is writable and nothing is
queued, a frame is handed to the connection's ``DirectSocket`` (the server's
own transport, offered by api/ws_protocol.py) and written at the end of the
loop turn with the member's other frames of that turn (api/hub/flush.py): no
task switch, no ASGI message, no per-member framing. When the socket is
backpressured (its client is not reading), frames wait in the queue, and a
writer task, started only then, sends them as the socket drains. An idle
connection therefore holds no task of its own.

A client that stops reading can never hold up a room: its queue fills and it
is closed with 1013 ``slow_consumer`` while the others go on. "Full" means
``limit`` frames queued *while the socket is backpressured*. A burst that
arrives faster than the writer gets scheduled may queue past the limit without
evicting anyone, up to a hard cap.

Without a ``DirectSocket`` (another ASGI server, Starlette's TestClient) every
frame goes through the queue and the ASGI ``send``.
"""

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Protocol

from itemrooms.api.close_codes import Close
from itemrooms.api.hub.backends.base import Sender
from itemrooms.api.hub.flush import FlushBatch
from itemrooms.api.hub.outgoing import Outgoing
from itemrooms.auth.tokens import Claims

log = logging.getLogger("itemrooms.hub")

# The ASGI scope extension under which api/ws_protocol.py offers a DirectSocket.
DIRECT_SOCKET = "itemrooms.direct_socket"

AsgiSend = Callable[[dict[str, Any]], Awaitable[None]]
# A queue item: one frame, wire bytes (this loop turn's direct frames, when something
# had to be queued behind them), a stream of frames (a replay, read from the backend a
# page at a time as the writer sends it) that counts as one item, or the close that
# ends the queue.
Replay = AsyncGenerator[Outgoing, None]
QueueItem = Outgoing | bytes | Replay | Close

# A queue never holds more than this many times its limit, backpressured or not.
BURST_CAP_FACTOR = 8


class DirectSocket(Protocol):
    """The server side of one accepted WebSocket, written without the ASGI detour."""

    def direct_writable(self) -> bool:
        """Open, and not backpressured: a write now goes out without piling up."""
        ...

    def direct_write(self, data: bytes) -> None:
        """Write complete frames; nothing happens if the connection is closing."""
        ...

    async def direct_drained(self) -> None:
        """Until the socket is writable again, or closed."""
        ...

    def direct_close(self, code: int, reason: str) -> None:
        """Send a close frame now, even while backpressured; idempotent."""
        ...


class Member:
    __slots__ = (
        "sender",
        "claims",
        "may_publish",
        "close_with",
        "_send",
        "_direct",
        "_batch",
        "_limit",
        "_queue",
        "_pending",
        "_writer",
        "_blocked",
        "_observe",
    )

    def __init__(
        self,
        sender: Sender,
        claims: Claims,
        may_publish: bool,
        send: AsgiSend,
        limit: int,
        observe: Callable[[float], None] | None = None,
        direct: DirectSocket | None = None,
        batch: FlushBatch | None = None,
    ) -> None:
        self.sender = sender
        self.claims = claims
        self.may_publish = may_publish  # decided once, at join, from the claims
        # Set once the connection is to be closed; nothing more is queued after it.
        self.close_with: Close | None = None
        self._send = send
        self._direct = direct if batch is not None else None
        self._batch = batch
        self._limit = limit
        # Made when first needed, and dropped when drained: an idle connection holds none.
        self._queue: deque[QueueItem] | None = None
        self._pending: list[bytes] = []  # frames for the end of this loop turn
        self._writer: asyncio.Task[None] | None = None
        # True only while the writer waits for the socket: push() then knows the
        # client is not keeping up, rather than merely not yet scheduled.
        self._blocked = False
        # Sampled members report how long a message took from accepted to their socket.
        self._observe = observe

    @property
    def client_id(self) -> str:
        return self.sender.client_id

    @property
    def idle(self) -> bool:
        """Nothing waits to be written (for tests and shutdown)."""
        return not self._queue and not self._pending and self._writer is None

    def push(self, frame: Outgoing, force: bool = False) -> bool:
        """Send a frame without waiting; False if the queue is full (a slow consumer)."""
        if self.close_with is not None:
            return True
        direct = self._direct
        if (
            direct is not None
            and self._writer is None
            and not self._queue
            and direct.direct_writable()
        ):
            pending = self._pending
            pending.append(frame.wire())
            if len(pending) == 1:
                self._batch.add(self)  # type: ignore[union-attr]  # set with direct
            if self._observe is not None and frame.accepted_at:
                self._observe(time.time() - frame.accepted_at)
            return True
        queued = len(self._queue) if self._queue else 0
        if queued >= self._limit and not force:
            if self._blocked or queued >= self._limit * BURST_CAP_FACTOR:
                return False
        self._enqueue(frame)
        return True

    def push_stream(self, frames: Replay) -> None:
        """Queue a stream of frames (a replay), produced lazily by the writer."""
        if self.close_with is None:
            self._enqueue(frames)

    def close(self, close: Close, drop_queued: bool = True) -> None:
        """Send a close frame next (after what is queued, unless ``drop_queued``); idempotent."""
        if self.close_with is not None:
            return
        self.close_with = close
        if drop_queued:
            self._queue = None
            self._pending.clear()
            if self._direct is not None:
                # Nothing left to wait for: the close goes out behind what the socket
                # already holds, even if its client never reads again.
                self._direct.direct_close(close.code, close.reason)
                if self._writer is not None:
                    self._writer.cancel()  # it only waited to write what was dropped
                return
        self._enqueue(close)

    def flush(self) -> None:
        """Write this loop turn's frames in one go (called by the FlushBatch)."""
        pending = self._pending
        if not pending:
            return  # dropped by a close meanwhile
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        # Nothing is queued while frames are pending (_enqueue takes them first), and
        # one turn's frames are written even if the socket filled up meanwhile.
        self._direct.direct_write(data)  # type: ignore[union-attr]  # set with pending

    async def stop(self) -> None:
        """Stop writing: the connection is over."""
        writer = self._writer
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def closed(self, timeout: float) -> None:
        """Wait, at most ``timeout``, until the queue (with its close) has been sent."""
        writer = self._writer
        if writer is not None:
            await asyncio.wait({writer}, timeout=timeout)

    def _enqueue(self, item: QueueItem) -> None:
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        if self._pending:
            # Frames of this turn not yet written go before what is queued now.
            queue.append(b"".join(self._pending))
            self._pending.clear()
        queue.append(item)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(
                self._write_queue(), name=f"writer {self.client_id}"
            )

    async def _write_queue(self) -> None:
        """Send queued frames until the queue is empty, a close is sent, or the socket
        is gone; then make way for direct writes again."""
        try:
            while queue := self._queue:  # a close without the queued frames replaces it
                item = queue.popleft()
                if isinstance(item, Close):
                    if self._direct is not None:
                        self._direct.direct_close(item.code, item.reason)
                    else:
                        await self._send(
                            {"type": "websocket.close", "code": item.code, "reason": item.reason}
                        )
                    return
                if isinstance(item, Outgoing | bytes):
                    await self._send_one(item)
                    continue
                try:
                    async for frame in item:
                        if self._queue is not queue:
                            break  # a close dropped what was queued: it goes next
                        await self._send_one(frame)
                finally:
                    await item.aclose()
                # A close that keeps the queue (rate_limited) waits for the whole replay:
                # cut short, the newer frames behind it would leave a gap that no resume
                # could fill (the client's last seq would be past it).
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client is gone: its reader sees the disconnect
            log.debug("writer %s stopped: %r", self.client_id, exc)
        finally:
            self._queue = None
            self._writer = None
            self._blocked = False

    async def _send_one(self, frame: Outgoing | bytes) -> None:
        direct = self._direct
        if direct is None:
            assert isinstance(frame, Outgoing)  # bytes come from direct writes only
            self._blocked = True
            await self._send(frame.asgi())
            self._blocked = False
        else:
            if not direct.direct_writable():
                self._blocked = True
                await direct.direct_drained()
                self._blocked = False
            direct.direct_write(frame if isinstance(frame, bytes) else frame.wire())
        if self._observe is not None and isinstance(frame, Outgoing) and frame.accepted_at:
            self._observe(time.time() - frame.accepted_at)
