"""Per-connection rates: token buckets.

Two per connection: publishes and binary frames at ``ITEMROOMS_RATE_LIMIT`` per
second, and every frame of any kind at ``ITEMROOMS_FRAME_RATE_LIMIT`` (pings,
refreshes and malformed frames cost CPU too: a ping flood on one connection slowed
other rooms' round trips sevenfold), each up to a burst of one second's worth. A frame
over a rate is refused with an ``error`` frame; a client that keeps going after
``STRIKES`` refusals in a row is closed with 1008 ``rate_limited``.
"""

import math
import time
from collections import OrderedDict
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


class UserBuckets:
    """A TokenBucket per user (``sub``), for what no connection holds: HTTP publishes.

    At most ``users`` buckets are kept, the least recently used dropped first: a
    dropped bucket was full or nearly so (a user who publishes keeps theirs fresh),
    and every user needs a token the issuer signed, so a flood of new users is not
    a flood of free publishes."""

    __slots__ = ("_rate", "_users", "_buckets", "_clock")

    def __init__(
        self, rate: float, users: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._users = users
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._clock = clock

    def retry_after(self, user: str) -> int:
        """0 if ``user`` may publish now (and it is counted), else whole seconds to wait."""
        bucket = self._buckets.get(user)
        if bucket is None:
            bucket = self._buckets[user] = TokenBucket(self._rate, clock=self._clock)
            if len(self._buckets) > self._users:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(user)
        if bucket.allow():
            return 0
        return max(1, math.ceil(1 / self._rate))
