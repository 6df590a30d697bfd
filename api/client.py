"""An asyncio client for item rooms, on the ``websockets`` library.

For Python apps that behave like mobile clients or services, and for integration
tests. It speaks the protocol of docs/PROTOCOL.md (v1.1) with the token in the
``Authorization: Bearer`` header::

    async with connect("ws://127.0.0.1:8000/items/42/ws", token=token, reconnect=True) as room:
        ack = await room.publish({"text": "hi"})      # your own copy, with its seq
        async for frame in room:                      # messages, presence, errors
            print(frame)

Design choices, and why:

- **One reader task** reads every frame and dispatches it: replies to the client's own
  requests (a publish's ``ref``, ``pong``, ``refreshed``) resolve the awaiting call, and
  room traffic goes to a queue that ``async for`` drains. Nothing else reads the socket,
  so a publish can await its ack while the application iterates.
- **Publishes are exactly once.** Each carries an ``id`` of its own. One the server has
  not answered when the connection drops, or answered ``outcome_unknown``, is sent again
  with the same ``id`` (after a reconnect, or a short backoff): the server answers an id
  it already published with that message (``"duplicate": true``), never a second one,
  and a resume's replay carrying the id settles it too. So :meth:`Room.publish` returns
  the message (its ``seq``) or raises an error whose outcome is known.
- **Reconnecting is opt-in** (``reconnect=True``): after any close that a retry can fix,
  the room reconnects with exponential backoff and full jitter (at once after 1012
  ``epoch_changed``), resuming with ``since`` and ``epoch``; iteration goes on across
  reconnects with every message once and in order, and yields each reconnection's
  ``welcome``. Without it, the first close ends the room, as it always did.
- **What iteration yields**: every ``message`` (your own included: they carry the
  ``seq`` you resume from, and ``ref`` marks yours; never a ``duplicate`` copy), every
  ``presence``, ``error`` frames that no call is awaiting, and with ``reconnect=True``
  the ``welcome`` of each reconnection. ``pong`` and ``refreshed`` answer ``ping()`` and
  ``refresh()`` and are not yielded, nor is an ``error`` that a ``publish()`` or
  ``refresh()`` raises. Binary frames (relayed by the server, never sequenced) arrive
  as ``{"type": "binary", "data": b"..."}``, a client-side frame type. Frame types and
  fields this client does not know are passed on untouched (v1.1: clients ignore them).
- **The queue is bounded** (``max_queue`` frames, default 4096). When it is full the
  reader stops reading, so the socket's buffers fill and the server eventually closes
  the connection with 1013 ``slow_consumer``: the protocol's own rule for a client that
  does not keep up, rather than unbounded memory or frames dropped silently. A client
  that only publishes and never iterates should pass ``max_queue=None``.
- **Closes are exceptions with the code and reason.** The server accepts every
  handshake and then closes a rejected one (1008 ``invalid_token``, ``forbidden``, …),
  so ``connect`` waits for the ``welcome`` and raises :class:`RoomClosed` if a close
  comes first. Iteration ends quietly only after a close you asked for; a close by the
  server that ends the room raises :class:`RoomClosed` once every frame received before
  it was yielded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import itertools
import json
import logging
import random
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

__all__ = [
    "FATAL_REASONS",
    "ClientError",
    "Frame",
    "NotConnected",
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
MESSAGE_TOO_BIG: Final = 1009
SERVICE_RESTART: Final = 1012  # epoch_changed: the room is there, with a new sequence
# Close reasons after which reconnecting cannot help (token_expired too, for a fixed token).
FATAL_REASONS: Final = frozenset(
    {
        "missing_token",
        "invalid_token",
        "forbidden",
        "origin_not_allowed",
        "invalid_item_id",
        "invalid_since",
        "invalid_request",
        "item_closed",
    }
)
# Error codes that say only "this attempt was not published": after an attempt whose
# outcome is unknown they are retried, since that earlier attempt may have been.
NOT_THIS_ATTEMPT: Final = frozenset({"unavailable", "rate_limited"})
ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")
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


class NotConnected(ClientError):
    """A reconnecting room has no connection right now: ``ping``, ``refresh`` and
    ``send_binary`` sent nothing (publishes wait for the connection instead)."""


class PublishRefused(ClientError):
    """A publish that was certainly not published (``unavailable``, ``not_allowed``,
    ``rate_limited``, ``not_connected``, ``message_too_big``…), or, only after the
    server could not tell for its whole dedup window, ``outcome_unknown``."""

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


def _with_resume(url: str, since: int | None, epoch: str | None) -> str:
    """``url`` with ``since`` (and, with it, ``epoch``) in its query, replacing any."""
    if since is None:
        return url
    parts = urlsplit(url)
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k not in ("since", "epoch")
    ]
    query.append(("since", str(since)))
    if epoch is not None:
        query.append(("epoch", epoch))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _closed(exc: ConnectionClosed) -> RoomClosed:
    if exc.rcvd is None:
        return RoomClosed(ABNORMAL_CLOSURE, "")
    return RoomClosed(exc.rcvd.code, exc.rcvd.reason)


class _Publish:
    """One publish until it is settled: sent (perhaps several times, with one id and one
    ref) until the server answers it with its message or a definite error."""

    __slots__ = (
        "future",
        "held",
        "id",
        "link",
        "ref",
        "retries",
        "sent",
        "sent_at",
        "text",
        "timer",
        "uncertain",
    )

    def __init__(self, id: str, ref: str, text: str, future: asyncio.Future[Frame]) -> None:
        self.id = id
        self.ref = ref
        self.text = text
        self.future = future
        self.sent = asyncio.Event()  # set at the first send: from then on the server decides
        self.sent_at: float | None = None  # monotonic time of the first send
        self.uncertain = False  # an attempt may have been published without our knowing
        self.held = False  # waiting for a replay to tell (sent longer ago than the window)
        self.retries = 0
        self.link: _Link | None = None  # the connection it was last sent on
        self.timer: asyncio.TimerHandle | None = None  # a retry's


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


class Room:
    """A joined room. Make one with :func:`connect`."""

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

    # --- state -------------------------------------------------------------

    @property
    def members(self) -> list[Frame]:
        """The other members now (``user``, ``client_id``), kept current by presence frames."""
        return list(self._members.values())

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

    # --- connections -------------------------------------------------------

    async def _start(self) -> None:
        """The first connection: its refusal is the caller's to see (no reconnect)."""
        ws, welcome = await self._open()
        await self._welcomed(ws, welcome, first=True)
        self._runner = asyncio.create_task(self._run(), name=f"itemrooms room {self.client_id}")

    async def _open(self) -> tuple[ClientConnection, Frame]:
        token = await _resolve(self._token_source)
        headers = {**self._headers, "Authorization": f"Bearer {token}"}
        options = {"close_timeout": DEFAULT_TIMEOUT, **self._options}
        ws = await ws_connect(
            _with_resume(self._url, self._last_seq, self._epoch),
            additional_headers=headers,
            open_timeout=self._open_timeout,
            **options,
        )
        try:
            try:
                raw = await asyncio.wait_for(ws.recv(), self._open_timeout)
            except ConnectionClosed as exc:
                raise _closed(exc) from None
            welcome = json.loads(raw)
            if not isinstance(welcome, dict) or welcome.get("type") != "welcome":
                raise ClientError(f"expected a welcome frame, got {raw!r}")
        except BaseException:
            await ws.close()
            raise
        self.token_exp = token_expiry(token)
        return ws, welcome

    async def _welcomed(self, ws: ClientConnection, welcome: Frame, *, first: bool) -> None:
        """Take a welcome in: the resume position, the members, the unsettled publishes."""
        seq = int(welcome["seq"])
        epoch = welcome.get("epoch") if isinstance(welcome.get("epoch"), str) else None
        last = self._last_seq
        # A new epoch, or (from a server without epochs) a seq that went backwards: the
        # room's sequence restarted, and everything it replays is new.
        reset = last is not None and (
            (self._epoch is not None and epoch is not None and epoch != self._epoch) or seq < last
        )
        self._last_seq = 0 if reset else seq if last is None else last
        self._epoch = epoch
        recovered = welcome.get("recovered") is not False and not reset
        self.welcome = welcome
        self.client_id, self.user = str(welcome["client_id"]), str(welcome["user"])
        self._members = {m["client_id"]: dict(m) for m in welcome.get("members", [])}
        if first:
            self.seq, self.epoch, self.recovered = self._last_seq, epoch, recovered
        else:
            await self._enqueue(_Resumed({**welcome, "recovered": recovered}, reset))
        self._link = _Link(ws)
        self._replay_to = seq if seq > self._last_seq else None
        self._complete = recovered
        # Unsettled publishes go out before any new one, in the order they were made.
        await self._resend(self._link)
        self._connected.set()
        if self._replay_to is None:
            self._replayed()

    async def _run(self) -> None:
        """Serve connections until the room closes for good: one, or with ``reconnect``,
        as many as it takes."""
        close = RoomClosed(1000, "")
        try:
            while True:
                link = self._link
                assert link is not None
                close = await self._serve(link)
                if self._closed_by_us or not self._reconnect or self._fatal(close):
                    break
                self._reconnecting = True
                refused = await self._reconnect_after(close)
                self._reconnecting = False
                if refused is not None:
                    close = refused
                    break
        except asyncio.CancelledError:
            close = RoomClosed(1000, "")  # close() between connections
        except BaseException as exc:  # a bug: never leave callers hanging
            close = RoomClosed(ABNORMAL_CLOSURE, f"client error: {exc!r}")
            raise
        finally:
            self._link = None
            self._connected.clear()
            self._close = close
            for future in [*self._pings, self._refresh]:
                if future is not None and not future.done():
                    future.set_exception(close)
            for entry in list(self._publishes.values()):
                self._settle(entry, error=close)
            self._queue.put_nowait(_END)

    async def _serve(self, link: _Link) -> RoomClosed:
        """Read one connection until it closes; what it leaves undone is settled later."""
        if self._auto_refresh_margin is not None:
            link.refresher = asyncio.create_task(self._auto_refresh(self._auto_refresh_margin))
        try:
            close = await self._read(link.ws)
        except BaseException:
            await link.ws.close()
            raise
        finally:
            self._link = None
            self._connected.clear()
            self._replay_to = None
            if link.refresher is not None:
                link.refresher.cancel()
                await asyncio.gather(link.refresher, return_exceptions=True)
        lost: ClientError = close
        if self._reconnect and not self._closed_by_us and not self._fatal(close):
            lost = NotConnected(f"the connection closed ({close.code} {close.reason})")
        for future in [*self._pings, self._refresh]:
            if future is not None and not future.done():
                future.set_exception(lost)
        if close.code == MESSAGE_TOO_BIG:
            self._too_big(link)
        for entry in self._publishes.values():
            if entry.sent_at is not None:
                entry.uncertain = True
                if entry.timer is not None:
                    entry.timer.cancel()
                    entry.timer = None
        return close

    async def _reconnect_after(self, close: RoomClosed) -> RoomClosed | None:
        """Reconnect with backoff until welcomed (None) or refused for good (the refusal)."""
        attempt = 0
        while True:
            if close.code != SERVICE_RESTART or attempt:
                base, cap = self._backoff
                await asyncio.sleep(random.uniform(0, min(cap, base * 2**attempt)))
            attempt += 1
            try:
                ws, welcome = await self._open()
            except RoomClosed as refused:
                if self._fatal(refused):
                    return refused
                close = refused
                continue
            except (OSError, TimeoutError, InvalidHandshake, ClientError) as exc:
                log.info("itemrooms: reconnecting to %s failed: %r", self._url, exc)
                close = RoomClosed(ABNORMAL_CLOSURE, "")
                continue
            try:
                await self._welcomed(ws, welcome, first=False)
            except BaseException:
                await ws.close()
                raise
            return None

    def _fatal(self, close: RoomClosed) -> bool:
        if close.reason == "token_expired":
            return isinstance(self._token_source, str)  # no new token will come
        return close.reason in FATAL_REASONS

    # --- publishes ---------------------------------------------------------

    async def _send_publish(self, entry: _Publish) -> None:
        link = self._link
        if link is None or entry.id not in self._publishes:
            return  # it goes out after the next welcome, or it was settled meanwhile
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        entry.held = False
        if entry.sent_at is None:
            entry.sent_at = time.monotonic()
            entry.sent.set()
        entry.link = link
        with contextlib.suppress(ConnectionClosed):  # the reader sees the close
            await link.ws.send(entry.text)

    async def _wait_sent(self, entry: _Publish, timeout: float) -> None:
        sent: asyncio.Future[Any] = asyncio.ensure_future(entry.sent.wait())
        answered: asyncio.Future[Any] = entry.future
        try:
            await asyncio.wait(
                {sent, answered}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            sent.cancel()
        if not entry.sent.is_set() and not entry.future.done():
            raise PublishRefused("not_connected", f"no connection within {timeout} s: not sent")

    async def _resend(self, link: _Link) -> None:
        """After a welcome: publishes not sent yet, and those sent without an answer, until
        none is left (publishes made meanwhile included). The server's dedup answers an id
        it already published with its copy (or the replay settles it first), so sending
        again cannot publish twice — within the dedup window. Older ones wait for the
        replay to tell (see ``_replayed``)."""
        while True:
            now = time.monotonic()
            due = []
            for entry in self._publishes.values():
                if entry.link is link or entry.held:
                    continue
                if entry.sent_at is not None and now - entry.sent_at > self._dedup_window:
                    entry.held = True
                else:
                    due.append(entry)
            if not due:
                return
            for entry in due:
                await self._send_publish(entry)

    def _replayed(self) -> None:
        """The welcome's replay is over. A publish held back that it did not settle: when
        the replay was complete it was never published, so sending it is safe; otherwise
        nothing can tell any more."""
        self._replay_to = None
        for entry in list(self._publishes.values()):
            if not entry.held:
                continue
            if self._complete:
                self._spawn(self._send_publish(entry))
            else:
                self._settle(entry, error=self._unknown())

    def _publish_failed(self, entry: _Publish, code: str, detail: str) -> None:
        if code == "outcome_unknown":
            entry.uncertain = True
        if not (code == "outcome_unknown" or (entry.uncertain and code in NOT_THIS_ATTEMPT)):
            self._settle(entry, error=PublishRefused(code, detail))
            return
        assert entry.sent_at is not None
        if time.monotonic() - entry.sent_at > self._dedup_window:
            self._settle(entry, error=self._unknown())
            return
        base, cap = self._retry_backoff
        delay = min(cap, base * 2**entry.retries)
        entry.retries += 1
        link = self._link
        entry.timer = asyncio.get_running_loop().call_later(
            random.uniform(delay / 2, delay), self._retry, entry, link
        )

    def _retry(self, entry: _Publish, link: _Link | None) -> None:
        entry.timer = None
        if self._link is link:  # otherwise the welcome sent it again already
            self._spawn(self._send_publish(entry))

    def _unknown(self) -> PublishRefused:
        return PublishRefused(
            "outcome_unknown",
            f"the server could not tell within {self._dedup_window:g} s whether it was published",
        )

    def _too_big(self, link: _Link) -> None:
        """After a 1009: the largest publish sent on that connection is over the server's
        limit (as large as the frame it refused, unless a binary frame was larger), hence
        unpublished; sending it again would only be refused again."""
        sizes = [(len(e.text.encode()), e) for e in self._publishes.values() if e.link is link]
        if sizes:
            size, biggest = max(sizes, key=lambda pair: pair[0])
            if size >= link.biggest_binary:
                refused = PublishRefused(
                    "message_too_big", f"the server refused a {size}-byte frame: not published"
                )
                self._settle(biggest, error=refused)

    def _entry_for(self, frame: Frame) -> _Publish | None:
        """The unsettled publish a message answers: by its ref (our own live copy), or by
        its id when we published it (a replayed copy carries the id, not the ref)."""
        ref = frame.get("ref")
        if ref is not None:
            return self._by_ref.get(str(ref))
        sender = frame.get("sender")
        if isinstance(sender, dict) and sender.get("user") == self.user:
            return self._publishes.get(str(frame.get("id")))
        return None

    def _settle(
        self, entry: _Publish, frame: Frame | None = None, error: BaseException | None = None
    ) -> None:
        self._forget(entry)
        if entry.future.done():
            return
        if error is not None:
            entry.future.set_exception(error)
        else:
            entry.future.set_result(frame or {})

    def _forget(self, entry: _Publish) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        if self._publishes.get(entry.id) is entry:
            del self._publishes[entry.id]
        if self._by_ref.get(entry.ref) is entry:
            del self._by_ref[entry.ref]

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- internals ---------------------------------------------------------

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

    async def _read(self, ws: ClientConnection) -> RoomClosed:
        """Read one connection's frames until it closes; return its close."""
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    await self._enqueue({"type": "binary", "data": raw})
                    continue
                try:
                    frame = json.loads(raw)
                except ValueError:
                    continue  # not ours to understand: the server only sends JSON objects
                if isinstance(frame, dict) and self._dispatch(frame):
                    await self._enqueue(frame)
            return RoomClosed(ws.close_code or 1000, ws.close_reason or "")
        except ConnectionClosed as exc:
            return _closed(exc)

    def _dispatch(self, frame: Frame) -> bool:
        """Resolve whatever awaits this frame; True if iteration should yield it."""
        kind = frame.get("type")
        if kind == "message":
            return self._on_message(frame)
        if kind == "presence":
            client_id = str(frame.get("client_id"))
            if frame.get("event") == "join":
                self._members[client_id] = {"user": frame.get("user"), "client_id": client_id}
            else:
                self._members.pop(client_id, None)
        elif kind == "error":
            code, detail = str(frame.get("code", "")), str(frame.get("detail", ""))
            if code == "invalid_refresh":  # the only error a refresh gets; it has no ref
                if self._refresh is not None and not self._refresh.done():
                    self._refresh.set_exception(RefreshRefused(code, detail))
                    return False
            else:
                entry = self._by_ref.get(str(frame.get("ref")))
                if entry is not None:
                    self._publish_failed(entry, code, detail)
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
        else:
            return False  # a type this client does not know: ignored (protocol v1.1)
        return True

    def _on_message(self, frame: Frame) -> bool:
        entry = self._entry_for(frame)
        if frame.get("duplicate") is True:
            # The answer to an id sent again: an acknowledgement, not a new message.
            if entry is not None:
                self._settle(entry, frame)
            return False
        seq = frame.get("seq")
        if not isinstance(seq, int):
            return True
        new = self._last_seq is None or seq > self._last_seq
        if new:
            self._last_seq = seq
        if entry is not None:
            self._settle(entry, frame)
        if self._replay_to is not None and seq >= self._replay_to:
            self._replayed()
        return new  # else seen before this reconnect (or before the epoch changed)

    async def _auto_refresh(self, margin: float) -> None:
        """Refresh ahead of expiry: ``margin`` seconds before it, or with a third of its
        lifetime left for short-lived tokens. A failure is logged, and the server's
        ``token_expired`` close then tells the application what happened (a reconnecting
        room then reconnects with a fresh token)."""
        exp = self.token_exp
        while exp is not None:
            now = time.time()
            await asyncio.sleep(max(0.0, exp - min(margin, max(0.0, exp - now) / 3) - now))
            if self.token_exp != exp:  # refreshed meanwhile (by hand): aim at the new exp
                exp = self.token_exp
                continue
            try:
                await self.refresh()
            except (RoomClosed, NotConnected):
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
