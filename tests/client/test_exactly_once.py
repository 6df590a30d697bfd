"""itemrooms.api.client with ``reconnect=True`` against real servers, under real faults: an
acknowledgement lost in a disconnect, a server restart, a Redis that comes back empty
(a new epoch). Each message once, in order; each publish settled once."""

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from itemrooms.api.client import Room, connect
from tests.client.cut_proxy import CutProxy
from tests.conftest import Mint
from tests.support.client import join, recv_type, send_json
from tests.support.redis_server import PrivateRedis
from tests.support.server import ServerProcess

WAIT = 10.0
QUICK = {"reconnect_delay": 0.05, "max_reconnect_delay": 0.5}


def joined(url: str, token: str, **options: Any) -> Any:
    return connect(url, token=token, proxy=None, reconnect=True, **{**QUICK, **options})


@pytest.fixture
async def proxy(server: ServerProcess) -> AsyncIterator[CutProxy]:
    async with CutProxy(server.port).running() as cut:
        yield cut


async def history(server: ServerProcess, item: str, token: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.http_url, headers=headers, timeout=5) as http:
        response = await http.get(f"/items/{item}/messages", params={"since": 0})
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


async def until_type(room: Room, kind: str) -> dict[str, Any]:
    return await room.receive(kind, timeout=WAIT)


async def test_a_publish_whose_ack_is_lost_in_a_disconnect_is_settled_once(
    server: ServerProcess, proxy: CutProxy, mint: Mint, item: str
) -> None:
    observer, _ = await join(server, item, mint("bob"))
    async with observer, joined(proxy.ws_url(item), mint("alice")) as room:
        before = await room.publish("before")
        proxy.hold()  # what the server says from now on is lost
        send = asyncio.create_task(room.publish("lost ack"))
        await recv_type(observer, "message", WAIT)  # "before"
        stored = await recv_type(observer, "message", WAIT)
        assert stored["data"] == "lost ack"  # the server has it; alice never heard
        assert stored.get("id"), f"the server does not echo publish ids yet: {stored}"
        proxy.cut()  # and the connection dies without a close frame

        sent = await asyncio.wait_for(send, WAIT)
        assert (sent["seq"], sent["id"]) == (stored["seq"], stored["id"]), sent
        after = await room.publish("after")
        assert after["seq"] == stored["seq"] + 1
        # Nobody saw it twice: the next message after it is "after".
        assert (await recv_type(observer, "message", WAIT))["seq"] == after["seq"]
        # Alice's iteration: her copies, the reconnection's welcome, the replay, once each.
        seen = [(await room.receive(timeout=WAIT)) for _ in range(4)]
        assert [(f["type"], f.get("seq")) for f in seen] == [
            ("message", before["seq"]),
            ("welcome", stored["seq"]),
            ("message", stored["seq"]),
            ("message", after["seq"]),
        ], seen
        assert seen[1]["recovered"] is True and room.recovered
    texts = [m["data"] for m in await history(server, item, mint("bob"))]
    assert texts == ["before", "lost ack", "after"]


async def test_every_message_once_and_in_order_across_a_server_restart(
    start_redis_server: Callable[..., ServerProcess], mint: Mint, item: str
) -> None:
    # Two processes share the room in Redis: alice's is restarted on the same port while
    # carol publishes through the other; alice publishes while hers is away too.
    one, two = start_redis_server(history_size=100), start_redis_server(history_size=100)
    async with joined(one.ws_url(item), mint("alice")) as room:
        await room.publish("first")
        epoch = room.epoch
        await asyncio.to_thread(one.stop)  # SIGINT: 1001 going_away
        offline = asyncio.create_task(room.publish("while away", timeout=WAIT * 3))
        carol, _ = await join(two, item, mint("carol"))
        async with carol:
            for n in range(3):
                await send_json(carol, {"type": "publish", "data": f"carol {n}", "ref": str(n)})
                await recv_type(carol, "message", WAIT)
        await asyncio.to_thread(start_redis_server, port=one.port, history_size=100)
        sent = await asyncio.wait_for(offline, WAIT * 3)
        assert sent["data"] == "while away"
        frames = [await room.receive(timeout=WAIT) for _ in range(6)]
        got = [(f["type"], f.get("seq"), f.get("data")) for f in frames]
        assert got == [
            ("message", 1, "first"),
            ("welcome", 4, None),
            ("message", 2, "carol 0"),
            ("message", 3, "carol 1"),
            ("message", 4, "carol 2"),
            ("message", 5, "while away"),
        ], got
        assert frames[1]["recovered"] is True and room.epoch == epoch is not None


async def test_redis_coming_back_empty_is_a_new_epoch_surfaced_as_recovered_false(
    start_redis_server: Callable[..., ServerProcess], mint: Mint, item: str, tmp_path: Path
) -> None:
    redis = PrivateRedis(tmp_path).start()
    try:
        server = start_redis_server(redis_url=redis.url)
        async with joined(server.ws_url(item), mint("alice")) as room:
            for n in range(3):
                await room.publish(n)
            old = room.epoch
            assert old is not None, "the server sends no epoch yet"
            redis.stop()
            redis.start()  # empty: the room's sequence and history are gone
            # After 1012 epoch_changed (the server's repair takes a few seconds).
            welcome = await room.receive("welcome", timeout=3 * WAIT)
            assert welcome["recovered"] is False and welcome["epoch"] != old, welcome
            assert (room.recovered, room.epoch) == (False, welcome["epoch"])
            sent = await room.publish("in the new epoch")
            message = await until_type(room, "message")  # nothing else: history is empty
            assert message["seq"] == sent["seq"] and message["data"] == "in the new epoch"
    finally:
        redis.stop()


def backend_errors(server: ServerProcess) -> float:
    metrics = server.get("/metrics").text
    return sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("itemrooms_backend_errors_total")
    )


async def test_a_publish_redis_stalls_on_is_retried_with_its_id_and_applied_once(
    start_redis_server: Callable[..., ServerProcess], mint: Mint, item: str, tmp_path: Path
) -> None:
    redis = PrivateRedis(tmp_path).start()
    control = aioredis.Redis.from_url(redis.url)
    try:
        server = start_redis_server(redis_url=redis.url, redis_timeout_s=0.5)
        observer, _ = await join(server, item, mint("bob"))
        async with observer, joined(server.ws_url(item), mint("alice")) as room:
            warm = await room.publish("warm")
            errors = await asyncio.to_thread(backend_errors, server)
            # Redis holds every command for 1.5 s, three times the server's timeout: the
            # publish was sent and not answered in time, so the server says outcome_unknown.
            await control.execute_command("CLIENT", "PAUSE", "1500", "ALL")
            sent = await asyncio.wait_for(room.publish("stalled"), 3 * WAIT)
            assert await asyncio.to_thread(backend_errors, server) > errors  # it did stall
            assert sent["seq"] == warm["seq"] + 1 and sent["data"] == "stalled", sent
            after = await room.publish("after")
            seen = [await recv_type(observer, "message", WAIT) for _ in range(3)]
            assert [m["data"] for m in seen] == ["warm", "stalled", "after"]
            assert after["seq"] == sent["seq"] + 1
        texts = [m["data"] for m in await history(server, item, mint("bob"))]
        assert texts == ["warm", "stalled", "after"]
    finally:
        await control.aclose()
        redis.stop()
