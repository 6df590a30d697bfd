"""Two hubs on one Redis: two processes in miniature, in one event loop."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from itemrooms.api.hub.backends.redis import RedisBackend
from itemrooms.api.hub.hub import Hub
from tests.hub.conftest import REDIS_URL, delete_prefix, present
from tests.hub.test_hub import Client

HubFactory = Callable[..., Awaitable[Hub]]


@pytest.fixture
async def make_hub() -> AsyncIterator[HubFactory]:
    prefix = f"itemrooms-test-{uuid.uuid4().hex[:10]}:"
    hubs: list[Hub] = []

    async def make(**options: float) -> Hub:
        hub = Hub(RedisBackend(REDIS_URL, prefix=prefix, history_size=1000, **options))
        await hub.start()
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        await hub.stop()
    await delete_prefix(prefix)


async def frames_until(client: Client, done: Callable[[list[dict[str, Any]]], bool]) -> None:
    await client.socket.until(done)


async def test_fan_out_and_one_seq_order_across_hubs(make_hub: HubFactory) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    a, b = Client(hub_a, "a"), Client(hub_b, "b")
    await hub_a.join("r", a.member, None)
    await hub_b.join("r", b.member, None)

    async def publish_from(hub: Hub, client: Client, tag: str) -> None:
        await asyncio.gather(
            *(
                hub.publish("r", client.member.sender, f'"{tag}{i}"'.encode(), None)
                for i in range(100)
            )
        )

    await asyncio.gather(publish_from(hub_a, a, "a"), publish_from(hub_b, b, "b"))
    for client in (a, b):
        await frames_until(client, lambda fs: sum(f["type"] == "message" for f in fs) >= 200)
    views = [
        [(f["seq"], f["data"]) for f in c.socket.frames if f["type"] == "message"] for c in (a, b)
    ]
    assert views[0] == views[1]
    assert [seq for seq, _ in views[0]] == list(range(1, 201))
    for client in (a, b):
        await client.stop()


async def test_presence_across_hubs(make_hub: HubFactory) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    a, b = Client(hub_a, "a"), Client(hub_b, "b")
    await hub_a.join("r", a.member, None)
    await hub_b.join("r", b.member, None)
    await frames_until(b, lambda fs: len(fs) >= 1)
    assert b.socket.frames[0]["members"] == [{"user": "a", "client_id": "c_a"}]
    await frames_until(a, lambda fs: any(f["type"] == "presence" for f in fs))
    join = next(f for f in a.socket.frames if f["type"] == "presence")
    assert (join["event"], join["client_id"]) == ("join", "c_b")
    await hub_b.leave("r", b.member)
    await frames_until(a, lambda fs: any(f.get("event") == "leave" for f in fs))
    for client in (a, b):
        await client.stop()


async def test_members_of_a_crashed_hub_leave_within_the_ttl(make_hub: HubFactory) -> None:
    hub_a, hub_b = await make_hub(presence_ttl_s=1.0), await make_hub(presence_ttl_s=1.0)
    a, b = Client(hub_a, "a"), Client(hub_b, "b")
    await hub_a.join("r", a.member, None)
    await hub_b.join("r", b.member, None)
    await frames_until(a, lambda fs: any(f.get("event") == "join" for f in fs))
    # A crash: hub B's process stops heart-beating and drops its connections, no cleanup.
    backend_b = hub_b.backend
    assert isinstance(backend_b, RedisBackend)
    for task in backend_b._tasks:
        task.cancel()
    await asyncio.gather(*backend_b._tasks, return_exceptions=True)
    backend_b._tasks = []
    started = asyncio.get_running_loop().time()
    await frames_until(a, lambda fs: any(f.get("event") == "leave" for f in fs))
    assert asyncio.get_running_loop().time() - started < 5
    assert await present(hub_a.backend, "r") == {"a": 1}
    for client in (a, b):
        await client.stop()


async def test_a_hub_that_lost_its_subscription_catches_up_from_history(
    make_hub: HubFactory,
) -> None:
    """Messages and joins that a hub missed while its pub/sub connection was gone are
    delivered, in order and once, when it comes back."""
    hub_a, hub_b = await make_hub(), await make_hub()
    a, b = Client(hub_a, "a"), Client(hub_b, "b")
    await hub_a.join("r", a.member, None)
    await hub_b.join("r", b.member, None)
    await hub_a.publish("r", a.member.sender, b"1", None)
    await b.socket.until(lambda fs: any(f.get("seq") == 1 for f in fs))
    backend_b = hub_b.backend
    assert isinstance(backend_b, RedisBackend)
    listener = backend_b._tasks[0]
    listener.cancel()
    await asyncio.gather(listener, return_exceptions=True)
    admin = aioredis.Redis.from_url(REDIS_URL)
    killed = 0
    for client in await admin.client_list(_type="pubsub"):
        if client["name"] == f"itemrooms-{backend_b.node_id}":
            killed += await admin.client_kill_filter(_id=client["id"])
    await admin.aclose()
    assert killed == 1
    # While hub B hears nothing: two messages and a newcomer on hub A.
    await hub_a.publish("r", a.member.sender, b"2", None)
    await hub_a.publish("r", a.member.sender, b"3", None)
    c = Client(hub_a, "c")
    await hub_a.join("r", c.member, None)
    backend_b._tasks[0] = asyncio.get_running_loop().create_task(backend_b._listen())
    await b.socket.until(lambda fs: any(f.get("client_id") == "c_c" for f in fs))
    await hub_a.publish("r", a.member.sender, b"4", None)
    await b.socket.until(lambda fs: any(f.get("seq") == 4 for f in fs))
    seqs = [f["seq"] for f in b.socket.frames if f["type"] == "message"]
    assert seqs == [1, 2, 3, 4]
    for client in (a, b, c):
        await client.stop()
