"""Presence for rooms of any size (api/hub/presence.py): one entry per user, changes in
batches, counts instead of names above ITEMROOMS_PRESENCE_LIST_MAX, no flapping.

Real hubs and backends; members are the fake sockets of test_hub.py. Waits are bounded
and wait for frames, never for time: where a test must show that something was *not*
sent, it waits for a later frame that would have come after it."""

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from itemrooms.api.hub.backends.base import BackendUnavailable, Sender
from itemrooms.api.hub.backends.memory import MemoryBackend
from itemrooms.api.hub.backends.redis import RedisBackend
from itemrooms.api.hub.hub import Hub
from itemrooms.api.hub.presence import PresencePolicy
from tests.hub.test_hub import Client
from tests.support.redis_server import PrivateRedis

PRESENCE = ("presence", "presence_count", "presence_list")


async def memory_hub(policy: PresencePolicy) -> Hub:
    hub = Hub(MemoryBackend(), presence=policy)
    await hub.start()
    return hub


def presence_frames(client: Client) -> list[dict[str, Any]]:
    return [f for f in client.socket.frames if f["type"] in PRESENCE]


async def until(client: Client, done: Callable[[list[dict[str, Any]]], bool]) -> None:
    await client.socket.until(lambda frames: done(presence_frames(client)))


def count_is(n: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda fs: bool(fs) and fs[-1].get("member_count") == n


async def joined(hub: Hub, user: str, tab: str = "") -> Client:
    client = Client(hub, user, client_id=f"c_{user}_{tab}" if tab else None)
    await hub.join("r", client.member, None)
    await client.settle()  # the welcome is out
    return client


@pytest.fixture
async def stop_all() -> AsyncIterator[list[Any]]:
    """Hubs and clients to stop after the test, whatever happened."""
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        await thing.stop()


async def test_a_storm_of_joins_costs_each_member_a_frame_per_interval(
    stop_all: list[Any],
) -> None:
    policy = PresencePolicy(interval_s=0.2, list_max=5, grace_s=1.0)
    hub = await memory_hub(policy)
    stop_all.append(hub)
    watcher = await joined(hub, "watcher")
    early = [await joined(hub, f"early{i}") for i in range(10)]  # a large room already
    stop_all.extend([watcher, *early])
    await until(watcher, count_is(11))
    before = len(presence_frames(watcher))
    started = asyncio.get_running_loop().time()
    storm = [Client(hub, f"u{i:03}") for i in range(300)]
    stop_all.extend(storm)
    await asyncio.gather(*(hub.join("r", c.member, None) for c in storm))
    elapsed = asyncio.get_running_loop().time() - started
    await until(watcher, count_is(311))
    # One frame per interval, plus the first (sent at once) and the last.
    bound = math.ceil(elapsed / policy.interval_s) + 2
    frames = presence_frames(watcher)[before:]
    assert len(frames) <= bound, (len(frames), elapsed)
    assert {f["type"] for f in frames} == {"presence_count"}
    assert sum(f["joined"] for f in frames) == 300  # every user counted once
    assert sum(f["left"] for f in frames) == 0
    for client in storm:
        await client.settle()
        welcome = client.socket.frames[0]
        assert len(welcome["members"]) <= policy.list_max
        assert welcome["presence_mode"] == "count"
        assert len(presence_frames(client)) <= bound
    late = await joined(hub, "late")
    stop_all.append(late)
    welcome = late.socket.frames[0]
    assert (welcome["presence_mode"], welcome["member_count"]) == ("count", 312)
    assert len(welcome["members"]) == policy.list_max
    assert "late" not in {m["user"] for m in welcome["members"]}


async def test_below_the_threshold_frames_are_v1_and_a_visit_within_a_batch_is_unseen(
    stop_all: list[Any],
) -> None:
    hub = await memory_hub(PresencePolicy(interval_s=0.3, list_max=100))
    stop_all.append(hub)
    watcher = await joined(hub, "watcher")
    bob = await joined(hub, "bob")  # the first change after a quiet interval: at once
    stop_all.extend([watcher, bob])
    await until(watcher, lambda fs: len(fs) == 1)
    carol = await joined(hub, "carol")
    await hub.leave("r", carol.member)
    await carol.stop()
    dave = await joined(hub, "dave")
    stop_all.append(dave)
    await until(watcher, lambda fs: len(fs) == 2)
    assert presence_frames(watcher) == [
        {"type": "presence", "item_id": "r", "event": "join", "user": "bob", "client_id": "c_bob"},
        {
            "type": "presence",
            "item_id": "r",
            "event": "join",
            "user": "dave",
            "client_id": "c_dave",
        },
    ]
    welcome = dave.socket.frames[0]
    assert welcome["members"] == [
        {"user": "watcher", "client_id": "c_watcher"},
        {"user": "bob", "client_id": "c_bob"},
    ]
    assert (welcome["member_count"], welcome["presence_mode"]) == (3, "list")


async def test_the_threshold_crossed_up_then_down(stop_all: list[Any]) -> None:
    """Up: counts instead of names. Down (at 90% of the threshold): the whole list,
    then v1 frames again."""
    hub = await memory_hub(PresencePolicy(interval_s=0.0, list_max=3, grace_s=0.0))
    stop_all.append(hub)
    watcher = await joined(hub, "watcher")
    u1, u2 = await joined(hub, "u1"), await joined(hub, "u2")
    u3 = await joined(hub, "u3")
    stop_all.extend([watcher, u1, u2, u3])
    await until(watcher, count_is(4))
    assert [f.get("user") for f in presence_frames(watcher)] == ["u1", "u2", None]
    assert presence_frames(watcher)[-1] == {
        "type": "presence_count",
        "item_id": "r",
        "member_count": 4,
        "joined": 1,
        "left": 0,
    }
    await hub.leave("r", u3.member)
    await until(watcher, lambda fs: fs[-1]["type"] == "presence_list")
    assert presence_frames(watcher)[-1] == {
        "type": "presence_list",
        "item_id": "r",
        "member_count": 3,
        "members": [
            {"user": "watcher", "client_id": "c_watcher"},
            {"user": "u1", "client_id": "c_u1"},
            {"user": "u2", "client_id": "c_u2"},
        ],
    }
    await hub.leave("r", u2.member)
    await until(watcher, lambda fs: fs[-1].get("event") == "leave")
    assert presence_frames(watcher)[-1]["user"] == "u2"
    late = await joined(hub, "late")
    stop_all.append(late)
    assert late.socket.frames[0]["presence_mode"] == "list"


async def test_two_tabs_are_one_member(stop_all: list[Any]) -> None:
    hub = await memory_hub(PresencePolicy(interval_s=0.0))
    stop_all.append(hub)
    watcher = await joined(hub, "watcher")
    tab1 = await joined(hub, "alice", "1")
    tab2 = await joined(hub, "alice", "2")
    stop_all.extend([watcher, tab1, tab2])
    # Alice's second tab is not told of alice, nor is anyone told of it.
    assert tab2.socket.frames[0]["members"] == [{"user": "watcher", "client_id": "c_watcher"}]
    assert tab2.socket.frames[0]["member_count"] == 2
    await hub.leave("r", tab1.member)
    bob = await joined(hub, "bob")  # a marker: anything about alice would come before
    stop_all.append(bob)
    await until(watcher, lambda fs: fs[-1].get("user") == "bob")
    await hub.leave("r", tab2.member)
    await until(watcher, lambda fs: fs[-1].get("event") == "leave")
    assert [(f["event"], f["user"], f["client_id"]) for f in presence_frames(watcher)] == [
        ("join", "alice", "c_alice_1"),
        ("join", "bob", "c_bob"),
        # The client_id of the join, so that a v1 client keyed by it removes the user.
        ("leave", "alice", "c_alice_1"),
    ]
    assert presence_frames(tab1) == [] and presence_frames(tab2)[0]["user"] == "bob"


async def test_a_return_within_the_grace_is_not_a_leave(stop_all: list[Any]) -> None:
    grace = 0.4
    hub = await memory_hub(PresencePolicy(interval_s=0.02, list_max=1, grace_s=grace))
    stop_all.append(hub)
    watcher = await joined(hub, "watcher")
    alice, bob = await joined(hub, "alice", "1"), await joined(hub, "bob")
    stop_all.extend([watcher, alice, bob])
    await until(watcher, count_is(3))
    await hub.leave("r", alice.member)  # a reload: gone, then back at once
    again = await joined(hub, "alice", "2")
    stop_all.append(again)
    loop = asyncio.get_running_loop()
    bob_left = loop.time()
    await hub.leave("r", bob.member)
    await until(watcher, count_is(2))
    # Bob's leave is counted only once the grace is over; alice's never was.
    assert loop.time() - bob_left >= grace * 0.9
    counts = [f for f in presence_frames(watcher) if f["type"] == "presence_count"]
    assert sum(f["left"] for f in counts) == 1
    assert [f["member_count"] for f in counts][-1] == 2


async def test_joins_waiting_for_a_failing_subscribe_fail_with_it(stop_all: list[Any]) -> None:
    """Joins do not queue on the room while the backend is slow: those waiting for the
    room's subscribe share its outcome instead of each trying (and timing out) in turn."""
    release = asyncio.Event()
    calls = 0

    class Stalled(MemoryBackend):
        async def subscribe(self, item_id: str) -> tuple[Sender, ...]:
            nonlocal calls
            calls += 1
            if calls > 1:
                return await super().subscribe(item_id)
            await asyncio.wait_for(release.wait(), 10)
            raise BackendUnavailable("timed out")

    hub = Hub(Stalled(), presence=PresencePolicy())
    await hub.start()
    stop_all.append(hub)
    clients = [Client(hub, f"u{i}") for i in range(20)]
    stop_all.extend(clients)
    joins = [asyncio.ensure_future(hub.join("r", c.member, None)) for c in clients]
    await asyncio.sleep(0)  # a turn: every join reached the room (not a timed wait)
    release.set()
    results = await asyncio.wait_for(asyncio.gather(*joins, return_exceptions=True), 10)
    assert all(isinstance(r, BackendUnavailable) for r in results)
    assert calls == 1
    later = Client(hub, "later")  # the room is not left broken: the next join subscribes
    stop_all.append(later)
    await hub.join("r", later.member, None)
    await later.settle()
    assert later.socket.frames[0]["type"] == "welcome" and calls == 2


async def test_a_join_cancelled_during_the_subscribe_does_not_fail_the_others(
    stop_all: list[Any],
) -> None:
    """Only a backend failure is shared: a joiner cancelled (its client left) while it
    subscribes leaves the next joiner to subscribe again."""
    entered = asyncio.Event()
    calls = 0

    class Slow(MemoryBackend):
        async def subscribe(self, item_id: str) -> tuple[Sender, ...]:
            nonlocal calls
            calls += 1
            if calls == 1:
                entered.set()
                await asyncio.Event().wait()  # until cancelled
            return await super().subscribe(item_id)

    hub = Hub(Slow(), presence=PresencePolicy())
    await hub.start()
    stop_all.append(hub)
    first, second = Client(hub, "first"), Client(hub, "second")
    stop_all.extend([first, second])
    cancelled = asyncio.ensure_future(hub.join("r", first.member, None))
    await asyncio.wait_for(entered.wait(), 10)
    waiting = asyncio.ensure_future(hub.join("r", second.member, None))
    await asyncio.sleep(0)  # a turn: the second join waits on the room (not a timed wait)
    cancelled.cancel()
    await asyncio.wait_for(waiting, 10)
    await second.settle()
    assert second.socket.frames[0]["type"] == "welcome" and calls == 2
    assert cancelled.cancelled()


async def test_a_redis_join_reads_nothing_of_the_room(
    private_redis: PrivateRedis, stop_all: list[Any]
) -> None:
    """With Redis, a join's cost does not grow with the room: no presence read at all."""
    backend = RedisBackend(private_redis.url, prefix="t:", history_size=100)
    hub = Hub(backend, presence=PresencePolicy(interval_s=0.05, list_max=10))
    await hub.start()
    stop_all.append(hub)
    clients = [Client(hub, f"u{i:03}") for i in range(200)]
    stop_all.extend(clients)
    for client in clients[:150]:
        await hub.join("r", client.member, None)
    stats = aioredis.from_url(private_redis.url)
    await stats.config_resetstat()
    await asyncio.gather(*(hub.join("r", c.member, None) for c in clients[150:]))
    commands = await stats.info("commandstats")
    await stats.aclose()
    read = {k: v["calls"] for k, v in commands.items() if k.split("_", 1)[1] in READS}
    assert read == {}, read
    await until(clients[0], count_is(200))
    page = await backend.presence_page("r", None, 1000)
    assert (page.member_count, len(page.users)) == (200, 200)


# Commands that read a whole hash, set or list.
READS = {"hgetall", "hkeys", "hvals", "hscan", "hlen", "zrange", "zcard", "lrange", "keys"}
