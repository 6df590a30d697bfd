"""Per-connection rates: token buckets.

Two per connection: publishes and binary frames at ``ITEMROOMS_RATE_LIMIT`` per
second, and every frame of any kind at ``ITEMROOMS_FRAME_RATE_LIMIT`` (pings,
refreshes and malformed frames cost CPU too: a ping flood on one connection slowed
other rooms' round trips sevenfold), each up to a burst of one second's worth. A frame
over a rate is refused with an ``error`` frame; a client that keeps going after
``STRIKES`` refusals in a row is closed with 1008 ``rate_limited``.
"""

import time
from collections.abc import Callable

STRIKES = 10
# A refresh costs this many frames of the frame budget: each is a signature check (a
# thread hop with JWKS), about as much CPU as a few dozen pings.
REFRESH_COST = 20


class TokenBucket:
    __slots__ = ("_rate", "_burst", "_tokens", "_at", "_clock", "strikes")

    def __init__(
        self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self._burst
        self._clock = clock
        self._at = clock()
        self.strikes = 0  # refusals since the last allowed publish

    def allow(self, cost: float = 1.0) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= cost:
            self._tokens -= cost
            self.strikes = 0
            return True
        self.strikes += 1
        return False

    @property
    def exhausted(self) -> bool:
        """The client kept publishing after being told to slow down."""
        return self.strikes > STRIKES
