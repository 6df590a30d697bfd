"""Issue 11's reproductions over the wire, part 2: Redis restarts, empty (no
persistence) or with its data (AOF, fsync on every write).

Real ``itemrooms serve`` processes on a private redis-server, real WebSocket and HTTP
clients. test_redis_outage.py has the basics of an outage (refusals while Redis is
away, 1012 for the members of a room Redis lost); these go further.
"""

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection

from tests.conftest import Mint, assert_healthy
from tests.support.client import drain_until_closed, join, recv_json, send_json
from tests.support.faults import (
    Frame,
    frames_until,
    history,
    is_ready,
    on_redis,
    post_message,
    present,
    publish_when_ready,
    pubsub_connections,
    until,
    wait_ready,
)
from tests.support.redis_server import PrivateRedis
from tests.support.server import ServerProcess

Starter = Callable[..., ServerProcess]
TTL_S = 2
GATE = "not-yet"


@pytest.fixture
def empty_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    instance = PrivateRedis(tmp_path).start()
    yield instance
    instance.stop()


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    instance = PrivateRedis(tmp_path, appendonly=True).start()
    yield instance
    instance.stop()


def messages(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if f["type"] == "message"]


async def restart(redis: PrivateRedis, servers: list[ServerProcess], down_s: float) -> None:
    """Redis away for ``down_s`` (the fault's duration), then back on its port and dir."""
    redis.stop()
    for server in servers:
        await wait_ready(server, False)
    await asyncio.sleep(down_s)
    await asyncio.to_thread(redis.start)


# --- 2. Redis back empty -------------------------------------------------------------


async def test_a_redis_back_empty_reuses_no_seq_and_refuses_publishes_until_repaired(
    start_server: Starter, empty_redis: PrivateRedis, mint: Mint, item: str
) -> None:
    server = start_server(**on_redis(empty_redis, presence_ttl_s=TTL_S))
    backend = mint("backend")
    alice, first = await join(server, item, mint("alice"))
    old = first.get("epoch")
    for n in range(1, 8):  # members saw 1..7; an offline client had seen up to 5
        await send_json(alice, {"type": "publish", "data": n, "ref": str(n), "id": f"a-{n}"})
    assert [f["seq"] for f in await _own_copies(alice, 7)] == list(range(1, 8))

    empty_redis.stop()
    await wait_ready(server, False)
    # Back empty, behind a password until the test has paused writes: the server can
    # then reconnect and subscribe (reads) but not repair (scripts), and the window in
    # which it is connected yet not repaired lasts until CLIENT UNPAUSE.
    await asyncio.to_thread(empty_redis.start, password=GATE)
    admin = empty_redis.client(GATE)
    try:
        admin.client_pause(20_000, all=False)
        empty_redis.open_gate(GATE)

        async def resubscribed() -> bool:
            return bool(await asyncio.to_thread(pubsub_connections, admin))

        await until(resubscribed, "the server subscribed again", 10)
        assert not await is_ready(server)
        refused = await post_message(server, item, backend, "while repairing", key="h-0")
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        await send_json(alice, {"type": "publish", "data": "w", "ref": "w", "id": "a-w"})
        error = await recv_json(alice)
        assert (error["type"], error["code"], error["ref"]) == ("error", "unavailable", "w")
    finally:
        admin.client_unpause()
        admin.close()

    frames, code, reason = await drain_until_closed(alice, timeout=10)
    assert (code, reason) == (1012, "epoch_changed")
    assert frames == [], "frames before the close: " + repr(frames)
    await wait_ready(server)
    after = await publish_when_ready(server, item, backend, "after", key="h-1")
    # A new epoch, numbered on after what members saw.
    assert after["epoch"] != old and after["seq"] == 8, after
    for n in (9, 10):
        more = await post_message(server, item, backend, n)
        assert (more.json()["seq"], more.json()["epoch"]) == (n, after["epoch"])
    new_epoch = [(8, "after"), (9, 9), (10, 10)]

    # Alice, closed with 1012, resumes; carol, offline meanwhile, had seen up to 5 and
    # resumes with her epoch, then v1 style with since alone.
    for user, since, epoch in (("alice", 7, old), ("carol", 5, old), ("carol", 5, None)):
        query = {"epoch": epoch} if epoch is not None else {}
        ws, welcome = await join(server, item, mint(user), since=since, extra_query=query)
        async with ws:
            assert welcome["recovered"] is False, (since, epoch, welcome)
            assert (welcome["epoch"], welcome["seq"]) == (after["epoch"], 10)
            replay = [await recv_json(ws) for _ in new_epoch]
            assert [(f["seq"], f["data"]) for f in replay] == new_epoch
    await assert_healthy(server)


async def _own_copies(ws: ClientConnection, count: int) -> list[Frame]:
    frames = await frames_until(ws, lambda f: f.get("ref") == str(count))
    return [f for f in messages(frames) if "ref" in f]


# --- 6. Redis back with its data: each message delivered once ---------------------------


async def test_messages_published_as_soon_as_redis_is_back_arrive_once_each(
    start_server: Starter, aof_redis: PrivateRedis, mint: Mint, item: str
) -> None:
    server = start_server(**on_redis(aof_redis, presence_ttl_s=TTL_S))
    backend = mint("backend")
    alice, first = await join(server, item, mint("alice"))
    async with alice:
        for n in (1, 2, 3):
            assert (await post_message(server, item, backend, n)).json()["seq"] == n
        await restart(aof_redis, [server], down_s=2.5)
        fourth = await publish_when_ready(server, item, backend, 4, key="k-4")
        fifth = await post_message(server, item, backend, 5, key="k-5")
        assert (fourth["seq"], fifth.json()["seq"]) == (4, 5)
        bob, welcome = await join(server, item, mint("bob"), since=3)
        async with bob:
            assert (welcome["seq"], welcome["recovered"]) == (5, True)
            assert (await post_message(server, item, backend, "end")).json()["seq"] == 6
            for ws, expected in ((bob, [4, 5, 6]), (alice, [1, 2, 3, 4, 5, 6])):
                got = await frames_until(ws, lambda f: f.get("data") == "end")
                assert [f["seq"] for f in messages(got)] == expected, got
        assert fourth["epoch"] == fifth.json()["epoch"] == first["epoch"]  # nothing lost
    await assert_healthy(server)


# --- 7. every publish answered across a restart -----------------------------------------


async def test_every_publish_on_an_open_connection_is_answered_across_a_redis_restart(
    start_server: Starter, aof_redis: PrivateRedis, mint: Mint, item: str
) -> None:
    server = start_server(**on_redis(aof_redis, presence_ttl_s=TTL_S))
    alice, _ = await join(server, item, mint("alice"))
    sent: list[str] = []  # refs, in order; ref r<n> goes with id p-<n>
    answers: dict[str, list[Frame]] = {}
    copies: list[Frame] = []  # every message alice sees, her own included
    stop = asyncio.Event()

    async def publish() -> None:
        while not stop.is_set():
            n = len(sent)
            sent.append(f"r{n}")
            await send_json(alice, {"type": "publish", "data": n, "ref": f"r{n}", "id": f"p-{n}"})
            await asyncio.sleep(0.02)  # a steady stream, not a synchronisation

    async def read() -> None:
        while True:
            frame = await recv_json(alice, timeout=30)
            if frame["type"] == "message":
                copies.append(frame)
            if "ref" in frame:
                answers.setdefault(frame["ref"], []).append(frame)

    def own() -> int:
        return len([f for f in copies if "ref" in f])

    async def answered_beyond(count: int) -> bool:
        return own() > count

    async with alice:
        tasks = [asyncio.create_task(publish()), asyncio.create_task(read())]
        try:
            await until(lambda: answered_beyond(5), "copies before the fault", 10)
            await restart(aof_redis, [server], down_s=2.5)
            await wait_ready(server)
            back = own()
            await until(lambda: answered_beyond(back + 5), "copies after the fault", 10)
            stop.set()
            await tasks[0]

            async def all_answered() -> bool:
                return all(ref in answers for ref in sent)

            await until(all_answered, "an answer to every publish", 10)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # Alice saw every message once and in order, and exactly what history holds.
    assert [f["seq"] for f in copies] == list(range(1, len(copies) + 1)), copies
    kept = (await history(server, item, mint("alice")))["messages"]
    assert [(m["seq"], m.get("id")) for m in kept] == [(f["seq"], f.get("id")) for f in copies]
    for ref, got in answers.items():
        for frame in got:
            if frame["type"] == "message":
                assert frame.get("id") == "p-" + ref[1:] and not frame.get("duplicate"), frame
            else:
                assert frame["type"] == "error", frame
                assert frame["code"] in ("unavailable", "outcome_unknown"), frame
    # "unavailable" is certainly not published.
    refused = {
        "p-" + ref[1:]
        for ref, got in answers.items()
        if all(f.get("code") == "unavailable" for f in got)
    }
    assert refused and refused.isdisjoint(m.get("id") for m in kept)
    await assert_healthy(server)


# --- 8. no presence flapping after a long outage -----------------------------------------


async def test_presence_does_not_flap_when_redis_is_back_after_more_than_the_ttl(
    start_server: Starter, aof_redis: PrivateRedis, mint: Mint, item: str
) -> None:
    settings = on_redis(aof_redis, presence_ttl_s=TTL_S)
    one, two = start_server(**settings), start_server(**settings)
    # Two members on each process: a flap shows to the members of the other process and
    # to a neighbour on the same one.
    members = [
        await join(server, item, mint(user))
        for server, user in ((one, "alice"), (one, "carol"), (two, "bob"), (two, "dave"))
    ]
    everyone = {welcome["user"] for _, welcome in members}
    for i, (ws, _) in enumerate(members):
        later = [w["client_id"] for _, w in members[i + 1 :]]
        joins = [await recv_json(ws) for _ in later]
        assert [(f["event"], f["client_id"]) for f in joins] == [("join", c) for c in later]
    await restart(aof_redis, [one, two], down_s=TTL_S + 1)  # every heartbeat expires
    for server in (one, two):
        await wait_ready(server)
    # The bound itself: within a TTL of coming back, any leave or join would be out.
    await asyncio.sleep(TTL_S + 1)
    alice = members[0][0]
    await send_json(alice, {"type": "publish", "data": "marker", "ref": "mk"})
    for ws, welcome in members:
        seen = await frames_until(ws, lambda f: f.get("data") == "marker")
        assert [f["type"] for f in seen] == ["message"], (welcome["user"], seen)
    reader = mint("reader", scope=["items:read"])
    for server in (one, two):
        assert await present(server, item, reader) == everyone
    for ws, _ in members:
        await ws.close()
    for server in (one, two):
        await assert_healthy(server)
