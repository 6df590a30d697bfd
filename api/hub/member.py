"""One connection's outbox: a bounded queue drained by the connection's own writer.

Broadcast only appends to queues, so one client that stops reading can never
hold up a room: its queue fills, and it is closed with 1013 ``slow_consumer``
while the others go on. Queue items are ready-made ASGI messages, shared by
every member that receives the same frame.

"Full" means ``limit`` frames queued *while the writer is stuck in a send*
(the socket is backpressured: the client is not reading). A burst that arrives
faster than the writer task gets scheduled (many publishes in one socket read,
say) may queue past the limit without evicting anyone, up to a hard cap.
"""

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from api.close_codes import Close
from api.hub.backends.base import Sender
from auth.tokens import Claims

AsgiMessage = dict[str, Any]
AsgiSend = Callable[[AsgiMessage], Awaitable[None]]
# A queue item: one message, or a stream of them (a replay) that the writer
# encodes as it sends, and that counts as one item.
QueueItem = AsgiMessage | Iterator[AsgiMessage]


def text_message(text: str) -> AsgiMessage:
    return {"type": "websocket.send", "text": text}


def bytes_message(payload: bytes) -> AsgiMessage:
    return {"type": "websocket.send", "bytes": payload}


# Key of the shared ASGI message holding when its message was accepted (epoch seconds);
# ASGI servers ignore keys they do not know.
ACCEPTED_AT = "itemrooms.accepted_at"

# A queue never holds more than this many times its limit, stuck writer or not.
BURST_CAP_FACTOR = 8


class Member:
    __slots__ = (
        "sender",
        "claims",
        "may_publish",
        "_send",
        "_limit",
        "_queue",
        "_waiter",
        "_blocked",
        "_observe",
        "close_with",
    )

    def __init__(
        self,
        sender: Sender,
        claims: Claims,
        may_publish: bool,
        send: AsgiSend,
        limit: int,
        observe: Callable[[float], None] | None = None,
    ) -> None:
        self.sender = sender
        self.claims = claims
        self.may_publish = may_publish  # decided once, at join, from the claims
        self._send = send
        self._limit = limit
        self._queue: deque[QueueItem] = deque()
        self._waiter: asyncio.Future[None] | None = None
        # True only while a send is suspended: a send to a writable socket completes
        # without yielding, so push() can only observe this when the socket is full.
        self._blocked = False
        # Sampled members report how long a message took from accepted to their socket.
        self._observe = observe
        # Set once the connection is to be closed; nothing more is queued after it.
        self.close_with: Close | None = None

    @property
    def client_id(self) -> str:
        return self.sender.client_id

    def push(self, message: AsgiMessage, force: bool = False) -> bool:
        """Queue a frame without waiting; False if the queue is full (a slow consumer)."""
        if self.close_with is not None:
            return True
        queued = len(self._queue)
        if queued >= self._limit and not force:
            if self._blocked or queued >= self._limit * BURST_CAP_FACTOR:
                return False
        self._queue.append(message)
        self._wake()
        return True

    def push_stream(self, messages: Iterator[AsgiMessage]) -> None:
        """Queue a stream of frames (a replay), produced lazily by the writer."""
        if self.close_with is None:
            self._queue.append(messages)
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self, close: Close, drop_queued: bool = True) -> None:
        """Send a close frame next (after what is queued, unless ``drop_queued``); idempotent."""
        if self.close_with is not None:
            return
        if drop_queued:
            self._queue.clear()
        self._queue.append({"type": "websocket.close", "code": close.code, "reason": close.reason})
        self.close_with = close
        self._wake()

    async def _send_one(self, message: AsgiMessage) -> None:
        self._blocked = True
        await self._send(message)
        self._blocked = False
        if self._observe is not None and ACCEPTED_AT in message:
            self._observe(time.time() - message[ACCEPTED_AT])

    async def run_writer(self) -> None:
        """Send queued frames until a close is sent or the socket is gone."""
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            while queue:
                item = queue.popleft()
                if isinstance(item, dict):
                    await self._send_one(item)
                    if item["type"] == "websocket.close":
                        return
                    continue
                for message in item:
                    if self.close_with is not None:
                        break  # the close waits behind it in the queue
                    await self._send_one(message)
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
