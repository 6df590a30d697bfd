"""Per-connection publish rate: a token bucket.

One bucket per connection, refilled at ``ITEMROOMS_RATE_LIMIT`` publishes per
second up to a burst of one second's worth. A publish over the rate is refused
with an ``error`` frame; a client that keeps going after ``STRIKES`` refusals in a
row is closed with 1008 ``rate_limited``.
"""

import time
from collections.abc import Callable

STRIKES = 10


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

    def allow(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.strikes = 0
            return True
        self.strikes += 1
        return False

    @property
    def exhausted(self) -> bool:
        """The client kept publishing after being told to slow down."""
        return self.strikes > STRIKES
