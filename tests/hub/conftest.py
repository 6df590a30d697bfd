"""Backends under test: every backend must pass the same contract suite.

The Redis backend runs against the Redis on 127.0.0.1:6379 and the PostgreSQL one
against the PostgreSQL on 127.0.0.1:5432 (both always there on the development
machines and in CI: never skipped), under a key prefix or a schema of the test's own
that is deleted afterwards.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from itemrooms.api.hub.backends.base import Backend, Event, Presence, Sender
from itemrooms.api.hub.backends.memory import MemoryBackend
from itemrooms.api.hub.backends.postgres import PostgresBackend
from itemrooms.api.hub.backends.redis import RedisBackend
from tests.conftest import POSTGRES_URL
from tests.support.redis_server import PrivateRedis

HISTORY = 10
REDIS_URL = "redis://127.0.0.1:6379/0"
WAIT_S = 5.0


class Recorder:
    """An EventSink that keeps what it was given, and lets a test wait for it."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Condition()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def until(self, done: Callable[[list[Event]], bool]) -> list[Event]:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: done(self.events)), WAIT_S)
        return self.events

    async def count(self, n: int) -> list[Event]:
        return await self.until(lambda events: len(events) >= n)


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll a condition that changes on its own (a heartbeat's or a repair's work),
    bounded by WAIT_S."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    """A redis-server of the test's own, to stop, pause or restart."""
    server = PrivateRedis(tmp_path).start()
    yield server
    server.stop()


async def present(backend: Backend, item_id: str, page: int = 2) -> dict[str, int]:
    """Who the backend holds in the room, every page read: user -> connections."""
    users: dict[str, int] = {}
    after = None
    while True:
        got = await backend.presence_page(item_id, after, page)
        users.update(got.users)
        assert got.member_count >= len(users)
        if got.next is None:
            return users
        after = got.next


def lapse_of(events: list[Event], member: Sender) -> list[str]:
    """The presence events about ``member``, in order ("join", "leave", ...)."""
    return [e.event for e in events if isinstance(e, Presence) and e.member == member]


async def delete_prefix(prefix: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def redis_prefix() -> str:
    return f"itemrooms-test-{uuid.uuid4().hex[:10]}:"


@pytest.fixture(params=["memory", "redis", "postgres"])
async def backend(
    request: pytest.FixtureRequest, redis_prefix: str, postgres_schema: str
) -> AsyncIterator[tuple[Backend, Recorder]]:
    recorder = Recorder()
    instance: Backend
    if request.param == "memory":
        instance = MemoryBackend(history_size=HISTORY)
    elif request.param == "redis":
        instance = RedisBackend(REDIS_URL, prefix=redis_prefix, history_size=HISTORY)
    else:
        instance = PostgresBackend(POSTGRES_URL, schema=postgres_schema, history_size=HISTORY)
    await instance.start(recorder)
    yield instance, recorder
    await instance.stop()
    if request.param == "redis":
        await delete_prefix(redis_prefix)


RedisFactory = Callable[..., Awaitable[tuple[RedisBackend, Recorder]]]


@pytest.fixture
async def redis_nodes(redis_prefix: str) -> AsyncIterator[RedisFactory]:
    """Start Redis backends sharing one prefix: several processes in miniature."""
    started: list[RedisBackend] = []

    async def start(**options: Any) -> tuple[RedisBackend, Recorder]:
        recorder = Recorder()
        node = RedisBackend(REDIS_URL, prefix=redis_prefix, history_size=HISTORY, **options)
        await node.start(recorder)
        started.append(node)
        return node, recorder

    yield start
    for node in started:
        await node.stop()
    await delete_prefix(redis_prefix)


PostgresFactory = Callable[..., Awaitable[tuple[PostgresBackend, Recorder]]]


@pytest.fixture
async def postgres_nodes(postgres_schema: str) -> AsyncIterator[PostgresFactory]:
    """Start PostgreSQL backends sharing one schema (of the shared server, unless the
    test passes ``url``): several processes in miniature."""
    started: list[PostgresBackend] = []

    async def start(url: str = POSTGRES_URL, **options: Any) -> tuple[PostgresBackend, Recorder]:
        recorder = Recorder()
        options.setdefault("history_size", HISTORY)
        node = PostgresBackend(url, schema=postgres_schema, **options)
        await node.start(recorder)
        started.append(node)
        return node, recorder

    yield start
    for node in started:
        await node.stop()
