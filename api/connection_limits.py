"""Caps on open connections, per process and per user (``sub``) in this process.

These are the app's own: uvicorn's ``--limit-concurrency`` counts WebSocket
connections but cannot refuse upgrades with a close code, and once reached it
answers health checks with 503. A connection over a cap is closed with 1013
``too_many_connections``.
"""

from collections import Counter


class ConnectionLimits:
    def __init__(self, per_process: int, per_user: int) -> None:
        self._per_process = per_process
        self._per_user = per_user
        self._total = 0
        self._by_user: Counter[str] = Counter()

    def acquire(self, user: str) -> bool:
        if self._total >= self._per_process or self._by_user[user] >= self._per_user:
            return False
        self._total += 1
        self._by_user[user] += 1
        return True

    def release(self, user: str) -> None:
        self._total -= 1
        self._by_user[user] -= 1
        if self._by_user[user] <= 0:
            del self._by_user[user]
