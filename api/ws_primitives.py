"""Slim stand-ins for the asyncio.Queue and asyncio.Event of uvicorn's WebSocket
protocol, one of each per open connection.

An asyncio.Queue holds three deques and an Event (a fourth); an asyncio.Event
holds one more. An empty deque takes about 640 bytes, so the two cost some 3 KiB
per connection, idle or not: a tenth of an idle connection's memory. uvicorn
uses only ``put_nowait``/``get``/``empty`` of the queue, with one reader (the
app's ``receive``), and ``set``/``clear``/``is_set``/``wait`` of the event;
these classes implement exactly that and allocate nothing while idle.
"""

import asyncio
from collections import deque
from typing import Any


class ReceiveQueue:
    """A FIFO with one consumer."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[Any] | None = None  # only while something is waiting to be read
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return self._items is None

    async def get(self) -> Any:
        while self._items is None:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item


class Flag:
    """An event: ``wait`` returns once it is set."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        while not self._set:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if self._waiters is not None and waiter in self._waiters:
                    self._waiters.remove(waiter)
