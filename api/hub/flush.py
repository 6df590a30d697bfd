"""Writes deferred to the end of the event loop's current turn, one per member.

A socket read often carries several publishes (a client sending in bursts),
and the hub fans each one out as it is handled. Writing each frame at once
would cost one ``send()`` system call per member per message; collecting a
turn's frames and writing them together costs one per member per burst. The
delay is a single loop turn: nothing waits on a timer.
"""

import asyncio
from typing import Protocol


class Flushable(Protocol):
    def flush(self) -> None: ...


class FlushBatch:
    __slots__ = ("_due", "_scheduled")

    def __init__(self) -> None:
        self._due: list[Flushable] = []
        self._scheduled = False

    def add(self, member: Flushable) -> None:
        """``member`` has frames to write: flush it at the end of this loop turn."""
        self._due.append(member)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        due, self._due = self._due, []
        self._scheduled = False
        for member in due:
            member.flush()
