"""What a room knows: the state that every layer of :class:`~itemrooms.api.client.Room` reads and
writes, and the small helpers they share (send a frame, await an answer with a timeout that
says why, queue a frame for iteration with backpressure).

Every attribute is set here, in the one ``__init__``, so that each layer above (and mypy)
sees the whole state and no layer can forget to set what another reads.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from collections import deque
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from .errors import ClientError, NotConnected, RoomClosed, _closed
from .protocol import DEFAULT_TIMEOUT, Frame
from .tokens import TokenSource

if TYPE_CHECKING:
    from .publishes import _Publish

_END: Final = object()  # queued last, when the room ends: iteration stops (or raises)
T = TypeVar("T")


class _Link:
    """One welcomed WebSocket connection of a room, until it closes."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.biggest_binary = 0  # for a 1009: a binary frame may have been the one too big
        self.refresher: asyncio.Task[None] | None = None


class _Resumed:
    """A reconnection's welcome, queued for iteration in order with the frames around it."""

    __slots__ = ("frame", "reset")

    def __init__(self, frame: Frame, reset: bool) -> None:
        self.frame = frame
        self.reset = reset


class _RoomState:
    """A room's state, and the helpers every layer uses. Subclassed by the layers of
    :class:`~itemrooms.api.client.Room` (see :mod:`itemrooms.api.client`), never used alone."""

    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        headers: Mapping[str, str] | None = None,
        since: int | None = None,
        epoch: str | None = None,
        max_queue: int | None = 4096,
        auto_refresh: bool = False,
        refresh_margin: float = 60.0,
        reconnect: bool = False,
        reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 30.0,
        retry_delay: float = 0.1,
        max_retry_delay: float = 2.0,
        dedup_window: float = 300.0,
        open_timeout: float = DEFAULT_TIMEOUT,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self._url = url
        self._token_source = token
        self._headers = dict(headers or {})
        self._options = dict(options or {})
        self._open_timeout = open_timeout
        self._reconnect = reconnect
        self._backoff = (reconnect_delay, max_reconnect_delay)
        self._retry_backoff = (retry_delay, max_retry_delay)
        self._dedup_window = dedup_window
        self._auto_refresh_margin = refresh_margin if auto_refresh else None
        self.welcome: Frame = {}
        """The last connection's welcome: ``client_id``, ``user``, ``members``, ``seq``…"""
        self.client_id: str = ""
        self.user: str = ""
        self.recovered: bool = True
        """False when the last welcome said messages may be missing (history no longer held
        them all, or the room's sequence restarted: reload the item's state)."""
        self.seq: int = since or 0
        """The ``seq`` of the last message ``async for`` yielded: pass it (with
        :attr:`epoch`) as ``since`` to resume without gaps or duplicates. Until then,
        ``since`` or ``welcome["seq"]``; 0 after a reconnection's welcome with a new epoch."""
        self.epoch: str | None = epoch
        """The epoch :attr:`seq` belongs to (None with a server that has no epochs)."""
        self.token_exp: float | None = None
        # What the reader has received (iteration may lag behind): the resume position.
        self._last_seq: int | None = since
        self._epoch: str | None = epoch
        self._replay_to: int | None = None  # after a welcome: the seq that ends its replay
        self._complete = True  # whether that replay is all that was missed
        self._members: dict[str, Frame] = {}
        self._member_count = 0
        self._presence_mode = "list"
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._max_queue = max_queue
        self._space = asyncio.Event()
        self._id_prefix = secrets.token_urlsafe(9)
        self._refs = itertools.count(1)
        self._publishes: dict[str, _Publish] = {}  # unsettled, in the order they were made
        self._by_ref: dict[str, _Publish] = {}
        self._pings: deque[asyncio.Future[None]] = deque()
        self._refresh: asyncio.Future[Frame] | None = None
        self._refresh_lock = asyncio.Lock()
        self._link: _Link | None = None
        self._connected = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._reconnecting = False
        self._closed_by_us = False
        self._close: RoomClosed | None = None

    @property
    def members(self) -> list[Frame]:
        """The other users now (``user``, ``client_id``: one entry per user), kept current
        by presence frames. In a large room (``presence_mode == "count"``) a sample of
        at most the server's ``ITEMROOMS_PRESENCE_LIST_MAX``, from the welcome."""
        return list(self._members.values())

    @property
    def member_count(self) -> int:
        """Users in the room, you included: exact in every mode (v1.2)."""
        return self._member_count

    @property
    def presence_mode(self) -> str:
        """``list`` while ``members`` is everyone, ``count`` in a large room (v1.2)."""
        return self._presence_mode

    @property
    def closed(self) -> bool:
        """True once the room is closed for good (a reconnecting room between connections
        is not closed)."""
        return self._close is not None

    @property
    def connected(self) -> bool:
        return self._link is not None and self._close is None

    @property
    def close_code(self) -> int | None:
        return self._close.code if self._close else None

    @property
    def close_reason(self) -> str | None:
        return self._close.reason if self._close else None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _current_link(self) -> _Link:
        if self._close is not None:
            raise self._close
        if self._link is None:
            raise NotConnected("the room is reconnecting")
        return self._link

    def _lost(self, exc: ConnectionClosed) -> ClientError:
        if self._close is not None:
            return self._close
        return NotConnected("the connection closed") if self._reconnect else _closed(exc)

    async def _send(self, frame: Frame) -> None:
        link = self._current_link()
        try:
            await link.ws.send(json.dumps(frame))
        except ConnectionClosed as exc:
            raise self._lost(exc) from None

    async def _wait(self, future: asyncio.Future[T], timeout: float, what: str) -> T:
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            full = self._max_queue is not None and self._queue.qsize() >= self._max_queue
            hint = " (the frame queue is full: iterate the room, or pass max_queue=None)"
            raise TimeoutError(
                f"no answer to {what} within {timeout} s{hint if full else ''}"
            ) from exc

    async def _enqueue(self, item: Any) -> None:
        while self._max_queue is not None and self._queue.qsize() >= self._max_queue:
            self._space.clear()
            await self._space.wait()  # backpressure: stop reading until the app catches up
        self._queue.put_nowait(item)
