"""One connection's outbox: a bounded queue drained by the connection's own writer.

Broadcast only appends to queues, so one client that stops reading can never
hold up a room: its queue fills, and it is closed with 1013 ``slow_consumer``
while the others go on. Queue items are ready-made ASGI messages, shared by
every member that receives the same frame.
"""

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from api.close_codes import Close
from api.hub.backends.base import Sender

AsgiMessage = dict[str, Any]
AsgiSend = Callable[[AsgiMessage], Awaitable[None]]


def text_message(text: str) -> AsgiMessage:
    return {"type": "websocket.send", "text": text}


def bytes_message(payload: bytes) -> AsgiMessage:
    return {"type": "websocket.send", "bytes": payload}


class Member:
    __slots__ = ("sender", "claims", "_send", "_limit", "_queue", "_waiter", "close_with")

    def __init__(self, sender: Sender, claims: Any, send: AsgiSend, limit: int) -> None:
        self.sender = sender
        self.claims = claims
        self._send = send
        self._limit = limit
        self._queue: deque[AsgiMessage] = deque()
        self._waiter: asyncio.Future[None] | None = None
        # Set once the connection is to be closed; nothing more is queued after it.
        self.close_with: Close | None = None

    @property
    def client_id(self) -> str:
        return self.sender.client_id

    def push(self, message: AsgiMessage, force: bool = False) -> bool:
        """Queue a frame without waiting; False if the queue is full (a slow consumer)."""
        if self.close_with is not None:
            return True
        if len(self._queue) >= self._limit and not force:
            return False
        self._queue.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    def close(self, close: Close) -> None:
        """Drop what is queued and send a close frame next; idempotent."""
        if self.close_with is not None:
            return
        self._queue.clear()
        self._queue.append({"type": "websocket.close", "code": close.code, "reason": close.reason})
        self.close_with = close
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run_writer(self) -> None:
        """Send queued frames until a close is sent or the socket is gone."""
        queue, send = self._queue, self._send
        loop = asyncio.get_running_loop()
        while True:
            while queue:
                message = queue.popleft()
                await send(message)
                if message["type"] == "websocket.close":
                    return
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
