"""Publishes, from the call until they are settled, exactly once.

Each publish has an ``id`` of its own and is sent, perhaps several times (after a
reconnect, or an ``outcome_unknown`` answer), with that id and one ``ref``, until the server
answers it with its message or a definite error. Sending again cannot publish twice: the
server answers an id it already published with that message (``"duplicate": true``), and a
resume's replay carrying the id settles it too. Past the server's dedup window that no
longer holds, so such a publish waits for the replay to tell. The connection loop calls in
here after a welcome (``_resend``), once its replay is over (``_replayed``) and after a 1009
(``_too_big``); the reader, with each answer (``_settle``, ``_publish_failed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from typing import Any, Final

from websockets.exceptions import ConnectionClosed

from .errors import PublishRefused
from .protocol import Frame
from .state import _Link, _RoomState

# Error codes that say only "this attempt was not published": after an attempt whose
# outcome is unknown they are retried, since that earlier attempt may have been.
NOT_THIS_ATTEMPT: Final = frozenset({"unavailable", "rate_limited"})
ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")


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


class _Publishes(_RoomState):
    """Each unsettled publish: sent, sent again, and settled with its message or error."""

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
