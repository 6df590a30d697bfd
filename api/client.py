"""An asyncio client for item rooms, on the ``websockets`` library.

For Python apps that behave like mobile clients or services, and for integration
tests. It speaks the protocol of docs/PROTOCOL.md with the token in the
``Authorization: Bearer`` header::

    async with connect("ws://127.0.0.1:8000/items/42/ws", token=token) as room:
        ack = await room.publish({"text": "hi"})      # your own copy, with its seq
        async for frame in room:                      # messages, presence, errors
            print(frame)

Design choices, and why:

- **One reader task** reads every frame and dispatches it: replies to the client's own
  requests (a publish's ``ref``, ``pong``, ``refreshed``) resolve the awaiting call, and
  room traffic goes to a queue that ``async for`` drains. Nothing else reads the socket,
  so a publish can await its ack while the application iterates.
- **What iteration yields**: every ``message`` (your own included: they carry the
  ``seq`` you resume from, and ``ref`` marks yours), every ``presence``, and ``error``
  frames that no call is awaiting. ``pong`` and ``refreshed`` answer ``ping()`` and
  ``refresh()`` and are not yielded, nor is an ``error`` that a ``publish()`` or
  ``refresh()`` raises. Binary frames (relayed by the server, never sequenced) arrive
  as ``{"type": "binary", "data": b"..."}``, a client-side frame type.
- **The queue is bounded** (``max_queue`` frames, default 4096). When it is full the
  reader stops reading, so the socket's buffers fill and the server eventually closes
  the connection with 1013 ``slow_consumer``: the protocol's own rule for a client that
  does not keep up, rather than unbounded memory or frames dropped silently. A client
  that only publishes and never iterates should pass ``max_queue=None``.
- **Closes are exceptions with the code and reason.** The server accepts every
  handshake and then closes a rejected one (1008 ``invalid_token``, ``forbidden``, …),
  so ``connect`` waits for the ``welcome`` and raises :class:`RoomClosed` if a close
  comes first. Iteration ends quietly only after a close you asked for; a close by the
  server raises :class:`RoomClosed` once every frame received before it was yielded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

__all__ = [
    "ClientError",
    "Frame",
    "PublishRefused",
    "RefreshRefused",
    "Room",
    "RoomClosed",
    "TokenSource",
    "connect",
    "token_expiry",
]

log = logging.getLogger("itemrooms.client")

Frame = dict[str, Any]
# A token, or a function (plain or async) that returns a fresh one each time it is called:
# what an app's auth layer usually offers, and what reconnects and refreshes need.
TokenSource = str | Callable[[], str] | Callable[[], Awaitable[str]]

DEFAULT_TIMEOUT: Final = 10.0
ABNORMAL_CLOSURE: Final = 1006  # no close frame was received (RFC 6455)
_END: Final = object()
T = TypeVar("T")


class ClientError(Exception):
    """Base class of the errors this client raises."""


class RoomClosed(ClientError):
    """The connection is closed; ``code`` and ``reason`` are the server's close frame.

    ``code`` is 1006 and ``reason`` empty when the connection dropped without one.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"room closed: {self.code} {self.reason or '(no reason)'}"


class PublishRefused(ClientError):
    """The server answered a publish with an ``error`` frame (e.g. ``not_allowed``)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail

    def __str__(self) -> str:
        return f"publish refused: {self.code}: {self.detail}"


class RefreshRefused(ClientError):
    """The server kept the old token (``invalid_refresh``: the new one does not expire later).

    A refresh with a bad token closes the connection instead: :class:`RoomClosed`.
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail

    def __str__(self) -> str:
        return f"refresh refused: {self.code}: {self.detail}"


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read **without verifying** it; None if there is none.

    Only to schedule a refresh: the client never trusts a token's claims, the server does
    the verifying.
    """
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp") if isinstance(claims, dict) else None
    except (IndexError, ValueError):
        return None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


async def _resolve(source: TokenSource) -> str:
    if isinstance(source, str):
        return source
    token = source()
    if inspect.isawaitable(token):
        token = await token
    if not isinstance(token, str):
        raise TypeError(f"the token source returned {type(token).__name__}, not a str")
    return token


def _with_since(url: str, since: int | None) -> str:
    if since is None:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "since"]
    query.append(("since", str(since)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _closed(exc: ConnectionClosed) -> RoomClosed:
    if exc.rcvd is None:
        return RoomClosed(ABNORMAL_CLOSURE, "")
    return RoomClosed(exc.rcvd.code, exc.rcvd.reason)


class Room:
    """A joined room. Make one with :func:`connect`."""

    def __init__(
        self,
        ws: ClientConnection,
        welcome: Frame,
        token: TokenSource,
        current_token: str,
        since: int | None,
        max_queue: int | None,
        auto_refresh: bool,
        refresh_margin: float,
    ) -> None:
        self._ws = ws
        self.welcome: Frame = welcome
        """The first frame the server sent: ``client_id``, ``user``, ``members``, ``seq``…"""
        self.client_id: str = welcome["client_id"]
        self.user: str = welcome["user"]
        self.recovered: bool = bool(welcome.get("recovered", True))
        self.seq: int = since if since is not None else int(welcome["seq"])
        """The ``seq`` of the last message ``async for`` yielded: pass it as ``since`` to
        resume without gaps or duplicates. Until then, ``since`` or ``welcome["seq"]``."""
        self._members: dict[str, Frame] = {m["client_id"]: dict(m) for m in welcome["members"]}
        self._token_source = token
        self.token_exp: float | None = token_expiry(current_token)
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._max_queue = max_queue
        self._space = asyncio.Event()
        self._refs = itertools.count(1)
        self._acks: dict[str, asyncio.Future[Frame]] = {}
        self._pings: deque[asyncio.Future[None]] = deque()
        self._refresh: asyncio.Future[Frame] | None = None
        self._refresh_lock = asyncio.Lock()
        self._closed_by_us = False
        self._close: RoomClosed | None = None
        self._reader = asyncio.create_task(self._read(), name=f"itemrooms reader {self.client_id}")
        self._refresher: asyncio.Task[None] | None = None
        if auto_refresh:
            self._refresher = asyncio.create_task(
                self._auto_refresh(refresh_margin), name=f"itemrooms refresh {self.client_id}"
            )

    # --- state -------------------------------------------------------------

    @property
    def members(self) -> list[Frame]:
        """The other members now (``user``, ``client_id``), kept current by presence frames."""
        return list(self._members.values())

    @property
    def closed(self) -> bool:
        return self._close is not None

    @property
    def close_code(self) -> int | None:
        return self._close.code if self._close else None

    @property
    def close_reason(self) -> str | None:
        return self._close.reason if self._close else None

    # --- requests ----------------------------------------------------------

    async def publish(self, data: Any, *, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        """Publish ``data``; return your own copy of the message (with its ``seq``).

        Returns only once the server acknowledged it (its ``ref`` came back), so the
        message is sequenced and stored. Raises :class:`PublishRefused` on an ``error``
        frame for it, :class:`RoomClosed` if the connection closes first, and
        ``TimeoutError`` after ``timeout`` seconds (then it may or may not be published).
        """
        ref = f"r{next(self._refs)}"
        ack: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._acks[ref] = ack
        try:
            await self._send({"type": "publish", "data": data, "ref": ref})
            return await self._wait(ack, timeout, "publish")
        finally:
            self._acks.pop(ref, None)

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

    async def refresh(self, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        """Send a newer token (by default, a fresh one from the token source); return the
        ``refreshed`` frame (its ``exp`` is the connection's new deadline).

        Raises :class:`RefreshRefused` when the new token does not expire later than the
        current one, and :class:`RoomClosed` when the server closes the connection over it
        (an invalid token, another user, an item it may not join).
        """
        async with self._refresh_lock:  # ``refreshed`` carries no ref: one at a time
            new = token if token is not None else await _resolve(self._token_source)
            done: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
            self._refresh = done
            try:
                await self._send({"type": "refresh", "token": new})
                frame = await self._wait(done, timeout, "refresh")
            finally:
                self._refresh = None
            self.token_exp = float(frame["exp"])
            return frame

    async def send_binary(self, data: bytes) -> None:
        """Relay bytes to the other members (needs ``items:write``; not stored, no seq)."""
        try:
            await self._ws.send(data)
        except ConnectionClosed as exc:
            raise self._close or _closed(exc) from None

    async def close(self) -> None:
        """Leave the room (close code 1000). Iteration then ends without an error."""
        self._closed_by_us = True
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        # Let the reader drain what is still buffered without waiting for the app.
        self._max_queue = None
        self._space.set()
        await self._ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)

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

    # --- internals ---------------------------------------------------------

    async def _send(self, frame: Frame) -> None:
        if self._close is not None:
            raise self._close
        try:
            await self._ws.send(json.dumps(frame))
        except ConnectionClosed as exc:
            raise self._close or _closed(exc) from None

    async def _wait(self, future: asyncio.Future[T], timeout: float, what: str) -> T:
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            full = self._max_queue is not None and self._queue.qsize() >= self._max_queue
            hint = " (the frame queue is full: iterate the room, or pass max_queue=None)"
            raise TimeoutError(
                f"no answer to {what} within {timeout} s{hint if full else ''}"
            ) from exc

    async def _enqueue(self, item: Frame) -> None:
        while self._max_queue is not None and self._queue.qsize() >= self._max_queue:
            self._space.clear()
            await self._space.wait()  # backpressure: stop reading until the app catches up
        self._queue.put_nowait(item)

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                if isinstance(raw, bytes):
                    await self._enqueue({"type": "binary", "data": raw})
                    continue
                frame = json.loads(raw)
                if isinstance(frame, dict) and self._dispatch(frame):
                    await self._enqueue(frame)
            self._close = RoomClosed(self._ws.close_code or 1000, self._ws.close_reason or "")
        except ConnectionClosed as exc:
            self._close = _closed(exc)
        except BaseException as exc:  # a bug or a cancellation: never leave callers hanging
            self._close = RoomClosed(ABNORMAL_CLOSURE, f"client error: {exc!r}")
            raise
        finally:
            assert self._close is not None
            for future in [*self._acks.values(), *self._pings, self._refresh]:
                if future is not None and not future.done():
                    future.set_exception(self._close)
            self._queue.put_nowait(_END)

    def _dispatch(self, frame: Frame) -> bool:
        """Resolve whatever awaits this frame; True if iteration should yield it."""
        kind = frame.get("type")
        if kind == "message":
            ack = self._acks.get(frame.get("ref", ""))
            if ack is not None and not ack.done():
                ack.set_result(frame)
        elif kind == "presence":
            if frame.get("event") == "join":
                self._members[frame["client_id"]] = {
                    "user": frame["user"],
                    "client_id": frame["client_id"],
                }
            else:
                self._members.pop(frame["client_id"], None)
        elif kind == "error":
            code, detail = str(frame.get("code", "")), str(frame.get("detail", ""))
            waiting: asyncio.Future[Frame] | None
            error: ClientError
            if code == "invalid_refresh":  # the only error a refresh gets; it has no ref
                waiting, error = self._refresh, RefreshRefused(code, detail)
            else:
                waiting, error = self._acks.get(frame.get("ref", "")), PublishRefused(code, detail)
            if waiting is not None and not waiting.done():
                waiting.set_exception(error)
                return False
        elif kind == "pong":
            while self._pings:
                pong = self._pings.popleft()
                if not pong.done():
                    pong.set_result(None)
                    break
            return False
        elif kind == "refreshed":
            if self._refresh is not None and not self._refresh.done():
                self._refresh.set_result(frame)
            return False
        return True

    async def _auto_refresh(self, margin: float) -> None:
        """Refresh ahead of expiry: ``margin`` seconds before it, or with a third of its
        lifetime left for short-lived tokens. A failure is logged, and the server's
        ``token_expired`` close then tells the application what happened."""
        exp = self.token_exp
        while exp is not None:
            now = time.time()
            await asyncio.sleep(max(0.0, exp - min(margin, max(0.0, exp - now) / 3) - now))
            if self.token_exp != exp:  # refreshed meanwhile (by hand): aim at the new exp
                exp = self.token_exp
                continue
            try:
                await self.refresh()
            except RoomClosed:
                return
            except Exception as exc:
                log.warning("itemrooms: automatic token refresh failed: %s", exc)
                return
            exp = self.token_exp


@contextlib.asynccontextmanager
async def connect(
    url: str,
    *,
    token: TokenSource,
    since: int | None = None,
    headers: Mapping[str, str] | None = None,
    auto_refresh: bool = False,
    refresh_margin: float = 60.0,
    max_queue: int | None = 4096,
    open_timeout: float = DEFAULT_TIMEOUT,
    **options: Any,
) -> AsyncIterator[Room]:
    """Join the room at ``url`` (``ws://host/items/{item_id}/ws``) and yield the :class:`Room`.

    ``token`` is a JWT or a function (sync or async) returning one; a function is asked
    again by :meth:`Room.refresh`, and ``auto_refresh=True`` refreshes by itself
    ``refresh_margin`` seconds before the token's ``exp``. ``since`` resumes after that
    ``seq``: the missed messages come first, in order, once each. ``options`` go to
    ``websockets.asyncio.client.connect`` (``max_size``, ``ping_interval``, …).

    Raises :class:`RoomClosed` with the server's code and reason when the room refuses
    the connection (``1008 invalid_token``, ``forbidden``, ``token_expired``, …), and the
    ``websockets``/``OSError`` exceptions when there is no WebSocket server to talk to.
    The connection is closed when the block exits.
    """
    first = await _resolve(token)
    all_headers = {**(headers or {}), "Authorization": f"Bearer {first}"}
    options.setdefault("close_timeout", DEFAULT_TIMEOUT)
    ws = await ws_connect(
        _with_since(url, since),
        additional_headers=all_headers,
        open_timeout=open_timeout,
        **options,
    )
    try:
        try:
            raw = await asyncio.wait_for(ws.recv(), open_timeout)
        except ConnectionClosed as exc:
            raise _closed(exc) from None
        welcome = json.loads(raw)
        if not isinstance(welcome, dict) or welcome.get("type") != "welcome":
            raise ClientError(f"expected a welcome frame, got {raw!r}")
    except BaseException:
        await ws.close()
        raise
    room = Room(ws, welcome, token, first, since, max_queue, auto_refresh, refresh_margin)
    try:
        yield room
    finally:
        await room.close()
