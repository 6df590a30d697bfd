"""What only the Redis backend does: key expiry, and its layout in Redis."""

import asyncio

import redis.asyncio as aioredis

from api.hub.backends.base import Sender
from api.hub.backends.redis import RedisBackend
from tests.hub.conftest import REDIS_URL, RedisFactory

ALICE = Sender("alice", "c_a")


async def test_a_room_forgets_its_history_after_the_ttl_without_messages(
    redis_nodes: RedisFactory, redis_prefix: str
) -> None:
    node, _ = await redis_nodes(history_ttl_s=60)
    await node.publish("r", ALICE, b"1", None)
    client = aioredis.Redis.from_url(REDIS_URL)
    for kind in ("seq", "history"):
        ttl_ms = await client.pttl(f"{redis_prefix}{kind}:r")
        assert 0 < ttl_ms <= 60_000, kind
    await client.aclose()


async def test_start_fails_clearly_when_redis_is_unreachable() -> None:
    from api.hub.backends.base import BackendUnavailable
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
