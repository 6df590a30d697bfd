"""Bounded waits: every wait in the kit polls a condition until a deadline.

Sleeping "long enough" is never used as synchronisation: a condition is checked
until it holds or the deadline passes, and the caller decides what a timeout means.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable

POLL_S = 0.05


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout: float, poll: float = POLL_S
) -> float | None:
    """Seconds until ``condition()`` held, or None when it did not within ``timeout``."""
    start = time.monotonic()
    while True:
        if await condition():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            return None
        await asyncio.sleep(poll)


def holds(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """A synchronous condition as the awaitable ``wait_until`` polls."""

    async def condition() -> bool:
        return check()

    return condition
