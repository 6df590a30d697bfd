"""Issue 11's reproductions over the wire, part 1: Redis stalls and a stalled process.

Real ``itemrooms serve`` processes on a private redis-server, real WebSocket and HTTP
clients; what is asserted is what a client sees. Restarts of Redis are in
test_redis_restarts.py.
"""

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Mint, assert_healthy
from tests.support.client import join, recv_type, send_json
from tests.support.faults import (
    Frame,
    frames_until,
    history,
    on_redis,
    post_message,
    present,
    pubsub_connections,
    until,
    wait_ready,
)
from tests.support.redis_server import PrivateRedis
from tests.support.server import ServerProcess

Starter = Callable[..., ServerProcess]
STALL_S = 3  # DEBUG SLEEP / CLIENT PAUSE, against a command timeout of 1 s


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    instance = PrivateRedis(tmp_path).start()
    yield instance
    instance.stop()


async def answering(redis: PrivateRedis) -> None:
    async def answers() -> bool:
        return await asyncio.to_thread(redis.answers)

    await until(answers, "Redis answering again after the stall", 10)


def copies_of(frames: list[Frame], id: str) -> list[Frame]:
    return [f for f in frames if f["type"] == "message" and f.get("id") == id]


# --- 1. a publish Redis stalls on ------------------------------------------------
#
# A presence TTL of a minute keeps heartbeats off the command pool during the stall, and a
# publish just before it leaves an open pooled connection: the stalled publish is then
# written to Redis and left unanswered (outcome unknown), not refused for want of a
# connection (certainly not published, another case, in test_redis_outage.py).


async def test_a_publish_redis_stalls_on_is_outcome_unknown_and_its_retry_one_message(
    start_server: Starter, private_redis: PrivateRedis, mint: Mint, item: str
) -> None:
    server = start_server(**on_redis(private_redis, presence_ttl_s=60))
    alice, _ = await join(server, item, mint("alice"))
    bob, _ = await join(server, item, mint("bob"))
    async with alice, bob:
        await send_json(alice, {"type": "publish", "data": "warm", "ref": "w"})
        assert (await recv_type(alice, "message"))["seq"] == 1
        await asyncio.to_thread(private_redis.stall, STALL_S)
        await send_json(alice, {"type": "publish", "data": "x", "ref": "r1", "id": "m-1"})
        error = await recv_type(alice, "error", timeout=STALL_S + 2)
        assert (error["code"], error["ref"]) == ("outcome_unknown", "r1"), error
        await answering(private_redis)
        await wait_ready(server)
        await send_json(alice, {"type": "publish", "data": "x", "ref": "r2", "id": "m-1"})
        seen = await frames_until(alice, lambda f: f.get("ref") == "r2")
        answer = seen[-1]
        # The stalled publish was applied or not: the retry is the message, or its copy.
        assert answer["type"] == "message", answer
        assert (answer["id"], answer["data"]) == ("m-1", "x")
        assert len([f for f in copies_of(seen, "m-1") if not f.get("duplicate")]) == 1, seen
        await send_json(alice, {"type": "publish", "data": "marker", "ref": "mk"})
        watched = await frames_until(bob, lambda f: f.get("data") == "marker")
        assert [(f["seq"], f.get("id")) for f in copies_of(watched, "m-1")] == [
            (answer["seq"], "m-1")
        ], watched
    kept = (await history(server, item, mint("alice")))["messages"]
    assert [(m["seq"], m.get("id"), m["data"]) for m in kept] == [
        (1, None, "warm"),
        (2, "m-1", "x"),
        (3, None, "marker"),
    ]
    await assert_healthy(server)


async def test_an_http_publish_redis_stalls_on_is_504_and_its_retry_a_duplicate(
    start_server: Starter, private_redis: PrivateRedis, mint: Mint, item: str
) -> None:
    server = start_server(**on_redis(private_redis, presence_ttl_s=60))
    token = mint("backend")
    watcher, _ = await join(server, item, mint("watcher"))
    async with watcher:
        warm = await post_message(server, item, token, "warm")
        assert warm.status_code == 200, warm.text
        epoch = warm.json().get("epoch")
        await asyncio.to_thread(private_redis.stall, STALL_S)
        stalled = await post_message(server, item, token, "x", key="k-1")
        assert stalled.status_code == 504, stalled.text
        await answering(private_redis)
        await wait_ready(server)
        # DEBUG SLEEP holds the publish, then Redis runs it: the retry finds it stored.
        retry = await post_message(server, item, token, "x", key="k-1")
        assert retry.status_code == 200, retry.text
        assert retry.json() == {
            "item_id": item,
            "seq": 2,
            "epoch": epoch,
            "duplicate": True,
            "id": "k-1",
        }
        marker = await post_message(server, item, token, "marker")
        assert marker.json()["seq"] == 3
        watched = await frames_until(watcher, lambda f: f.get("data") == "marker")
        assert [f["seq"] for f in watched if f["type"] == "message"] == [1, 2, 3], watched
    kept = (await history(server, item, token))["messages"]
    assert [(m["seq"], m.get("id")) for m in kept] == [(1, None), (2, "k-1"), (3, None)]
    await assert_healthy(server)


# --- 3. presence through a stalled process and a stalled Redis ---------------------


async def test_a_leave_while_redis_is_paused_is_done_after_without_a_reconnect(
    start_server: Starter, private_redis: PrivateRedis, mint: Mint, item: str
) -> None:
    # A TTL of 6 s outlasts the pause: no heartbeat lapses, so no process is reaped (which
    # would remove the ghost by another path); the leave itself must be done again.
    ttl = 6
    settings = on_redis(private_redis, presence_ttl_s=ttl)
    one, two = start_server(**settings), start_server(**settings)
    alice, wa = await join(one, item, mint("alice"))
    bob, wb = await join(two, item, mint("bob"))
    reader = mint("reader", scope=["items:read"])
    admin = private_redis.client()
    try:
        async with alice:
            assert (await recv_type(alice, "presence"))["client_id"] == wb["client_id"]
            listeners = pubsub_connections(admin)
            assert len(listeners) == 2, admin.client_list()
            admin.client_pause(STALL_S * 1000, all=False)  # CLIENT PAUSE … WRITE
            paused_at = time.monotonic()
            await bob.close()  # its leave waits on the pause past the command timeout
            assert time.monotonic() - paused_at < 1, "bob's leave came after the pause"
            left = await recv_type(alice, "presence", timeout=STALL_S + ttl + 3)
            assert (left["event"], left["client_id"]) == ("leave", wb["client_id"])
            for server in (one, two):

                async def no_ghost(server: ServerProcess = server) -> bool:
                    return await present(server, item, reader) == {"alice"}

                await until(no_ghost, f"GET /presence on :{server.port} without bob", ttl)
            assert pubsub_connections(admin) == listeners, "a pub/sub connection was renewed"
    finally:
        admin.close()
    await assert_healthy(two)
