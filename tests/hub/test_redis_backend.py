"""What only the Redis backend does: key expiry, and its layout in Redis."""

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from itemrooms.api.hub.backends.base import Sender
from itemrooms.api.hub.backends.redis import RedisBackend
from itemrooms.api.hub.backends.redis_publish import PublishPipeline
from tests.hub.conftest import HISTORY, REDIS_URL, RedisFactory

ALICE = Sender("alice", "c_a")


async def test_a_room_forgets_its_history_after_the_ttl_without_messages(
    redis_nodes: RedisFactory, redis_prefix: str
) -> None:
    node, _ = await redis_nodes(history_ttl_s=60)
    await node.publish("r", ALICE, b"1", None)
    client = aioredis.Redis.from_url(REDIS_URL)
    for kind in ("meta", "history"):
        ttl_ms = await client.pttl(f"{redis_prefix}{kind}:r")
        assert 0 < ttl_ms <= 60_000, kind
    await client.aclose()


async def test_start_fails_clearly_when_redis_is_unreachable() -> None:
    from itemrooms.api.hub.backends.base import BackendUnavailable
    from tests.hub.conftest import Recorder

    backend = RedisBackend("redis://127.0.0.1:1/0")
    try:
        await backend.start(Recorder())
    except BackendUnavailable as exc:
        assert "cannot reach Redis" in str(exc)
    else:
        raise AssertionError("started without Redis")
    finally:
        await backend.stop()


async def test_a_quiet_room_with_members_keeps_its_seq_past_the_ttl(
    redis_nodes: RedisFactory, redis_prefix: str
) -> None:
    node, _ = await redis_nodes(history_ttl_s=1.0, presence_ttl_s=1.0)
    await node.subscribe("kept")
    await node.publish("kept", ALICE, b"1", None)
    await node.publish("dropped", ALICE, b"1", None)
    await asyncio.sleep(2.5)  # the behaviour under test is time passing beyond the TTL
    assert (await node.snapshot("kept", None)).seq == 1
    assert (await node.snapshot("dropped", None)).seq == 0


async def test_concurrent_publishes_keep_their_order_and_share_round_trips(
    redis_nodes: RedisFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    node, _ = await redis_nodes()
    pipelines = 0
    send = PublishPipeline._pipeline

    async def counting(self: PublishPipeline, batch: list[Any]) -> list[Any]:
        nonlocal pipelines
        pipelines += 1
        return await send(self, batch)

    monkeypatch.setattr(PublishPipeline, "_pipeline", counting)
    results = await asyncio.gather(*(node.publish("r", ALICE, b"%d" % i, None) for i in range(100)))
    assert [r.seq for r in results] == list(range(1, 101))  # call order is seq order
    assert 1 <= pipelines <= 5  # batched: not one round trip per publish
    history = (await node.snapshot("r", 0, limit=1000)).messages
    assert len(history) >= HISTORY  # trimmed approximately, from the oldest
    assert [m.data for m in history] == [b"%d" % i for i in range(100)][-len(history) :]


async def test_publishing_goes_on_after_redis_forgets_its_scripts(
    redis_nodes: RedisFactory,
) -> None:
    node, _ = await redis_nodes()
    assert (await node.publish("r", ALICE, b"1", None)).seq == 1
    client = aioredis.Redis.from_url(REDIS_URL)
    await client.script_flush()  # what a Redis restart does to the script cache
    await client.aclose()
    results = await asyncio.gather(*(node.publish("r", ALICE, b"2", None) for _ in range(3)))
    assert [r.seq for r in results] == [2, 3, 4]
