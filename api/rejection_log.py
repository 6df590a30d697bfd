"""One INFO line per refused handshake, so an operator hunting a wave of ``token_expired``
has something to read, and a bounded number of them however many are refused.

The first ``BURST`` refusals are written at once, then ``LINES_PER_S`` a second; the
rest are counted by reason and summed up in one line ``SUMMARY_EVERY_S`` after the
first one left out. A storm of 10,000 bad tokens writes a few dozen lines. The line has
the reason, the item, the client's address and its Origin; never the credential.
"""

import asyncio
import logging
from collections import Counter

from itemrooms.api.rate_limit import TokenBucket

log = logging.getLogger("itemrooms.rejections")

LINES_PER_S = 5.0
BURST = 20.0
SUMMARY_EVERY_S = 10.0


class RejectionLog:
    __slots__ = ("_bucket", "_left_out", "_summary")

    def __init__(self) -> None:
        self._bucket = TokenBucket(LINES_PER_S, BURST)
        self._left_out: Counter[str] = Counter()
        self._summary: asyncio.TimerHandle | None = None

    def refused(self, reason: str, item_id: str, client: str, origin: str | None) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        if self._bucket.allow():
            log.info("refused %s: item %s, client %s, origin %s", reason, item_id, client, origin)
            return
        self._left_out[reason] += 1
        if self._summary is None:
            loop = asyncio.get_running_loop()
            self._summary = loop.call_later(SUMMARY_EVERY_S, self.summarise)

    def summarise(self) -> None:
        """The line for what was left out (also called at shutdown)."""
        if self._summary is not None:
            self._summary.cancel()
            self._summary = None
        if self._left_out:
            total = sum(self._left_out.values())
            reasons = ", ".join(f"{r} {n}" for r, n in self._left_out.most_common())
            log.info("refused %d more handshakes, not logged one by one: %s", total, reasons)
            self._left_out.clear()
