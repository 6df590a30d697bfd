"""The room as applications use it: :class:`Room`, whose own methods are the requests
(``publish``, ``ping``, ``send_binary``, ``close``; ``refresh`` comes from its refresh
layer) and the iteration, and :func:`connect`, which joins a room, yields it and leaves it.

The machinery under the API (the connections, the reader, publishes until settled) is in
Room's base classes; :mod:`itemrooms.api.client` lists them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from websockets.exceptions import ConnectionClosed

from .connections import _Connections
from .errors import RoomClosed
from .protocol import DEFAULT_TIMEOUT, Frame
from .publishes import ID_PATTERN, _Publish
from .state import _END, _Resumed
from .tokens import TokenSource


class Room(_Connections):
    """A joined room. Make one with :func:`connect`."""

    # --- requests ----------------------------------------------------------

    async def publish(
        self, data: Any, *, timeout: float = DEFAULT_TIMEOUT, id: str | None = None
    ) -> Frame:
        """Publish ``data`` exactly once; return the message as the room has it.

        That is your own copy (``ref`` set), or the copy the server answers a repeated id
        with (``"duplicate": true``, the original ``seq``), or the replayed copy after a
        reconnect. ``id`` is your own idempotency key (1 to 64 of ``A-Z a-z 0-9 . _ : -``);
        by default a unique one. A publish made while the room is reconnecting waits for
        the connection at most ``timeout`` seconds; once sent, only the server's answer
        (or the room closing) ends it, across reconnects and ``outcome_unknown`` retries.

        Raises :class:`PublishRefused` when it was certainly not published: an ``error``
        frame (``not_allowed``, ``rate_limited``, ``unavailable``…), ``not_connected``
        (not sent within ``timeout``), ``message_too_big`` (the server closed 1009 over
        it); or ``outcome_unknown`` only when the server could not tell for a whole
        ``dedup_window``. Raises :class:`RoomClosed` when the room closes for good first,
        ``ValueError`` for a malformed or in-progress ``id``, ``TypeError`` when ``data``
        is not JSON.
        """
        if self._close is not None:
            raise self._close
        pid = id if id is not None else f"{self._id_prefix}-{next(self._refs)}"
        if not isinstance(pid, str) or not ID_PATTERN.fullmatch(pid):
            raise ValueError(f"a publish id is 1 to 64 of A-Z a-z 0-9 . _ : -, not {pid!r}")
        if pid in self._publishes:
            raise ValueError(f"a publish with id {pid!r} is in progress")
        ref = f"r{next(self._refs)}"
        text = json.dumps({"type": "publish", "data": data, "ref": ref, "id": pid})
        entry = _Publish(pid, ref, text, asyncio.get_running_loop().create_future())
        self._publishes[pid] = entry
        self._by_ref[ref] = entry
        try:
            if self._connected.is_set():
                await self._send_publish(entry)
            if not entry.sent.is_set():  # reconnecting: it goes out after the welcome
                await self._wait_sent(entry, timeout)
            return await entry.future
        finally:
            self._forget(entry)

    async def ping(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """An application-level round trip (``ping``/``pong``): is the room still serving us?"""
        pong: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings.append(pong)
        try:
            await self._send({"type": "ping"})
            await self._wait(pong, timeout, "ping")
        finally:
            with contextlib.suppress(ValueError):
                self._pings.remove(pong)

    async def send_binary(self, data: bytes) -> None:
        """Relay bytes to the other members (needs ``items:write``; not stored, no seq)."""
        link = self._current_link()
        link.biggest_binary = max(link.biggest_binary, len(data))
        try:
            await link.ws.send(data)
        except ConnectionClosed as exc:
            raise self._lost(exc) from None

    async def close(self) -> None:
        """Leave the room (close code 1000). Iteration then ends without an error."""
        self._closed_by_us = True
        # Let the reader drain what is still buffered without waiting for the app.
        self._max_queue = None
        self._space.set()
        link, runner = self._link, self._runner
        if runner is not None and self._reconnecting:
            runner.cancel()  # between connections: nothing to close but the attempt
        elif link is not None:
            await link.ws.close()
        if runner is not None:
            await asyncio.gather(runner, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- iteration ---------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Frame]:
        return self

    async def __anext__(self) -> Frame:
        item = await self._queue.get()
        self._space.set()
        if item is _END:
            self._queue.put_nowait(_END)  # every later call ends the same way
            if self._closed_by_us or self._close is None:
                raise StopAsyncIteration
            raise self._close
        if isinstance(item, _Resumed):
            welcome = item.frame
            self.recovered = bool(welcome["recovered"])
            self.epoch = welcome.get("epoch") if isinstance(welcome.get("epoch"), str) else None
            if item.reset:
                self.seq = 0
            return welcome
        frame: Frame = item
        if frame.get("type") == "message" and isinstance(frame.get("seq"), int):
            self.seq = frame["seq"]
        return frame

    async def receive(self, kind: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        """The next frame (of type ``kind``, skipping others), waiting at most ``timeout``."""

        async def scan() -> Frame:
            async for frame in self:
                if kind is None or frame.get("type") == kind:
                    return frame
            raise self._close or RoomClosed(1000, "")

        return await asyncio.wait_for(scan(), timeout)


@contextlib.asynccontextmanager
async def connect(
    url: str,
    *,
    token: TokenSource,
    since: int | None = None,
    epoch: str | None = None,
    headers: Mapping[str, str] | None = None,
    auto_refresh: bool = False,
    refresh_margin: float = 60.0,
    max_queue: int | None = 4096,
    open_timeout: float = DEFAULT_TIMEOUT,
    reconnect: bool = False,
    reconnect_delay: float = 0.5,
    max_reconnect_delay: float = 30.0,
    retry_delay: float = 0.1,
    max_retry_delay: float = 2.0,
    dedup_window: float = 300.0,
    **options: Any,
) -> AsyncIterator[Room]:
    """Join the room at ``url`` (``ws://host/items/{item_id}/ws``) and yield the :class:`Room`.

    ``token`` is a JWT or a function (sync or async) returning one; a function is asked
    again at every reconnect and by :meth:`Room.refresh`, and ``auto_refresh=True``
    refreshes by itself ``refresh_margin`` seconds before the token's ``exp``. ``since``
    (with the ``epoch`` it belongs to, if known) resumes after that ``seq``: the missed
    messages come first, in order, once each. ``options`` go to
    ``websockets.asyncio.client.connect`` (``max_size``, ``ping_interval``, …).

    ``reconnect=True`` keeps the room connected: after a close that a retry can fix
    (anything but :data:`FATAL_REASONS`, and ``token_expired`` with a fixed token) it
    reconnects, waiting a random time up to ``reconnect_delay * 2**attempt`` (at most
    ``max_reconnect_delay``; none after 1012 ``epoch_changed``), and resumes with
    ``since`` and ``epoch``. ``retry_delay``/``max_retry_delay`` pace the retries of an
    ``outcome_unknown`` publish; ``dedup_window`` is the server's
    ``ITEMROOMS_PUBLISH_DEDUP_S``, past which an id is no longer sent again blindly.

    Raises :class:`RoomClosed` with the server's code and reason when the room refuses
    the first connection (``1008 invalid_token``, ``forbidden``, ``token_expired``, …),
    and the ``websockets``/``OSError`` exceptions when there is no WebSocket server to
    talk to. The connection is closed when the block exits.
    """
    room = Room(
        url,
        token,
        headers=headers,
        since=since,
        epoch=epoch,
        max_queue=max_queue,
        auto_refresh=auto_refresh,
        refresh_margin=refresh_margin,
        reconnect=reconnect,
        reconnect_delay=reconnect_delay,
        max_reconnect_delay=max_reconnect_delay,
        retry_delay=retry_delay,
        max_retry_delay=max_retry_delay,
        dedup_window=dedup_window,
        open_timeout=open_timeout,
        options=options,
    )
    await room._start()
    try:
        yield room
    finally:
        await room.close()
