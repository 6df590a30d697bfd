"""One room across real server processes sharing the real Redis (127.0.0.1:6379)."""

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Mint
from tests.support.client import (
    join,
    known_users,
    publish_many,
    recv_json,
    recv_type,
    send_json,
)
from tests.support.server import ServerProcess

Starter = Callable[..., ServerProcess]


async def test_fan_out_across_processes(start_redis_server: Starter, mint: Mint, item: str) -> None:
    one, two = start_redis_server(), start_redis_server()
    a, _ = await join(one, item, mint("alice"))
    b, _ = await join(two, item, mint("bob"))
    async with a, b:
        await send_json(a, {"type": "publish", "data": "from one", "ref": "1"})
        await send_json(b, {"type": "publish", "data": "from two", "ref": "2"})
        for ws in (a, b):
            got = [await recv_type(ws, "message") for _ in range(2)]
            assert sorted(f["data"] for f in got) == ["from one", "from two"]
            assert [f["seq"] for f in got] == [1, 2]


async def test_one_seq_order_under_concurrent_publishers_on_both(
    start_redis_server: Starter, mint: Mint, item: str
) -> None:
    one, two = start_redis_server(), start_redis_server()
    p1, _ = await join(one, item, mint("p1"))
    p2, _ = await join(two, item, mint("p2"))
    w1, _ = await join(one, item, mint("w1"))
    w2, _ = await join(two, item, mint("w2"))
    count = 100

    async def publish(ws: Any, tag: str) -> None:
        for i in range(count):
            await send_json(ws, {"type": "publish", "data": f"{tag}{i}"})

    async def watch(ws: Any) -> list[tuple[int, str]]:
        return [
            (f["seq"], f["data"])
            for f in [await recv_type(ws, "message") for _ in range(2 * count)]
        ]

    _, _, *views = await asyncio.gather(
        publish(p1, "a"), publish(p2, "b"), watch(p1), watch(p2), watch(w1), watch(w2)
    )
    view1 = views[0]
    assert all(view == view1 for view in views)
    assert [seq for seq, _ in view1] == list(range(1, 2 * count + 1))
    # Each publisher's own messages keep their order.
    for tag in "ab":
        assert [d for _, d in view1 if d[0] == tag] == [f"{tag}{i}" for i in range(count)]
    for ws in (p1, p2, w1, w2):
        await ws.close()


async def test_presence_across_processes(
    start_redis_server: Starter, mint: Mint, item: str
) -> None:
    one, two = start_redis_server(), start_redis_server()
    a, wa = await join(one, item, mint("alice"))
    async with a:
        b, wb = await join(two, item, mint("bob"))
        assert wb["members"] == [{"user": "alice", "client_id": wa["client_id"]}]
        joined = await recv_json(a)
        assert (joined["event"], joined["client_id"]) == ("join", wb["client_id"])
        await b.close()
        left = await recv_json(a)
        assert (left["event"], left["client_id"]) == ("leave", wb["client_id"])


async def test_resume_on_the_other_process(
    start_redis_server: Starter, mint: Mint, item: str
) -> None:
    one, two = start_redis_server(), start_redis_server()
    await publish_many(one, item, mint(), 5)
    ws, welcome = await join(two, item, mint("bob"), since=2)
    async with ws:
        assert (welcome["seq"], welcome["recovered"]) == (5, True)
        assert [(await recv_json(ws))["data"] for _ in range(3)] == [2, 3, 4]


async def test_resume_after_restarting_every_process(
    start_redis_server: Starter, mint: Mint, item: str
) -> None:
    one, two = start_redis_server(), start_redis_server()
    await publish_many(one, item, mint(), 5)
    one.stop()
    two.stop()
    three = start_redis_server()
    ws, welcome = await join(three, item, mint("bob"), since=3)
    async with ws:
        assert (welcome["seq"], welcome["recovered"]) == (5, True)
        assert [(await recv_json(ws))["seq"] for _ in range(2)] == [4, 5]
        await send_json(ws, {"type": "publish", "data": "after restart"})
        assert (await recv_json(ws))["seq"] == 6


async def test_several_workers_share_rooms(
    start_redis_server: Starter, mint: Mint, item: str
) -> None:
    server = start_redis_server(workers=2)
    clients = [await join(server, item, mint(f"u{i}")) for i in range(6)]
    try:
        # Everyone knows everyone, whichever worker took its connection.
        for ws, welcome in clients:
            known, _ = await known_users(ws, welcome, 5)
            assert known == {f"u{i}" for i in range(6)} - {welcome["user"]}
        await send_json(clients[0][0], {"type": "publish", "data": "hello all"})
        for ws, _ in clients:
            assert (await recv_type(ws, "message"))["data"] == "hello all"
    finally:
        for ws, _ in clients:
            await ws.close()


def test_memory_backend_refuses_several_workers(start_server: Starter) -> None:
    with pytest.raises(RuntimeError, match="ITEMROOMS_BACKEND=redis"):
        start_server(workers=2, backend="memory")
