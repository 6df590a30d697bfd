"""The connection loop: open a connection and take its welcome, serve it until it closes,
and with ``reconnect=True`` reconnect with backoff and resume with ``since`` and ``epoch``.

The first connection is opened by ``_start``, so that its refusal reaches the caller of
``connect()``; the later ones by ``_reconnect_after``, which gives up only on a close that no
retry can fix. When the room ends for good, ``_run`` settles everything still waiting with
that close, so that no caller is left hanging.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from .errors import ClientError, NotConnected, RoomClosed, _closed
from .protocol import (
    ABNORMAL_CLOSURE,
    DEFAULT_TIMEOUT,
    FATAL_REASONS,
    MESSAGE_TOO_BIG,
    SERVICE_RESTART,
    Frame,
    _with_resume,
)
from .refresh import _Refreshing
from .state import _END, _Link, _Resumed
from .tokens import _resolve, token_expiry

log = logging.getLogger("itemrooms.client")


class _Connections(_Refreshing):
    """Opens, welcomes, serves and reconnects the room's connections, one at a time."""

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
        # A server before v1.2 sends neither: a list of the others, you not in it.
        self._member_count = int(welcome.get("member_count", len(self._members) + 1))
        self._presence_mode = str(welcome.get("presence_mode", "list"))
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
