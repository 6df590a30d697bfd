"""A private database of either kind, for the fault tests that hold for both backends
(tests/integration/test_backend_faults.py): settings for a server on it, and the two
moves a test makes with it (away for good, back empty)."""

import asyncio
from typing import Any

from chaos.postgres_server import PrivatePostgres
from tests.support.faults import on_redis
from tests.support.redis_server import PrivateRedis

TTL_S = 2
TIMEOUT_S = 1


class PrivateBackend:
    """``kind`` is ``redis`` or ``postgres``; exactly one of the servers is set."""

    def __init__(
        self, redis: PrivateRedis | None = None, postgres: PrivatePostgres | None = None
    ) -> None:
        self.redis, self.postgres = redis, postgres
        self.kind = "redis" if redis is not None else "postgres"

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """A server on this database, with a TTL and timeouts short enough for a test."""
        if self.redis is not None:
            return on_redis(self.redis, **({"presence_ttl_s": TTL_S} | overrides))
        assert self.postgres is not None
        settings: dict[str, Any] = {"backend": "postgres", "postgres_url": self.postgres.url()}
        settings |= {"presence_ttl_s": TTL_S, "postgres_timeout_s": TIMEOUT_S}
        return settings | {"history_size": 1000} | overrides

    def lose_everything(self) -> None:
        """Down, and what it held gone: Redis without persistence stopped; PostgreSQL
        crashed and replaced by a new empty cluster."""
        if self.redis is not None:
            self.redis.stop()
        else:
            assert self.postgres is not None
            self.postgres.wipe()

    async def come_back(self) -> None:
        if self.redis is not None:
            await asyncio.to_thread(self.redis.start)
        else:
            assert self.postgres is not None
            await self.postgres.start()
