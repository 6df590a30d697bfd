"""A kick that holds and a close that stays closed, on every process: what a moderator
needs (a kick and a close used to let the same token straight back in)."""

from collections.abc import Callable

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from tests.conftest import Mint, assert_healthy
from tests.support.client import (
    bearer,
    closed_with,
    drain_until_closed,
    join,
    open_room,
    recv_json,
    send_json,
)
from tests.support.server import ServerProcess

Starter = Callable[..., ServerProcess]


def two_processes(
    backend: str, start_server: Starter, start_redis_server: Starter
) -> list[ServerProcess]:
    """Two processes sharing the rooms (Redis), or one twice (memory)."""
    if backend == "redis":
        return [start_redis_server(), start_redis_server()]
    one = start_server()
    return [one, one]


async def next_is_marker(ws: ClientConnection, marker: str) -> None:
    """Publish a marker and see it as the next frame: nothing (no join) came before it."""
    await send_json(ws, {"type": "publish", "data": marker, "ref": marker})
    frame = await recv_json(ws)
    assert (frame["type"], frame["data"]) == ("message", marker), frame


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_kick_holds_for_its_ban_on_every_process(
    start_server: Starter, start_redis_server: Starter, mint: Mint, item: str, backend: str
) -> None:
    one, two = two_processes(backend, start_server, start_redis_server)
    admin = bearer(mint("admin", scope=["items:admin"]))
    watcher, _ = await join(one, item, mint("watcher"))
    alice, _ = await join(two, item, mint("alice"))
    async with watcher, httpx.AsyncClient(timeout=5) as http:
        assert (await recv_json(watcher))["event"] == "join"
        kicked = await http.post(
            f"{one.http_url}/items/{item}/kick", json={"sub": "alice", "ban_s": 300}, headers=admin
        )
        assert kicked.status_code == 202, kicked.text
        assert (await drain_until_closed(alice))[1:] == (1008, "forbidden")
        assert (await recv_json(watcher))["event"] == "leave"
        for server in (one, two):  # the same token, on either process: refused
            again = await open_room(server, item, mint("alice"))
            assert await closed_with(again) == (1008, "forbidden")
        await next_is_marker(watcher, "no join was announced")
        bob, _ = await join(two, item, mint("bob"))  # others still join
        await bob.close()
        # A kick without a ban does not hold.
        carol, _ = await join(two, item, mint("carol"))
        await http.post(
            f"{one.http_url}/items/{item}/kick", json={"sub": "carol", "ban_s": 0}, headers=admin
        )
        assert (await drain_until_closed(carol))[1:] == (1008, "forbidden")
        carol_again, _ = await join(two, item, mint("carol"))
        await carol_again.close()
        metrics = (await http.get(f"{two.http_url}/metrics")).text
        assert 'itemrooms_rejections_total{reason="forbidden"}' in metrics
    await assert_healthy(one)
    await assert_healthy(two)


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_closed_item_stays_closed_until_opened(
    start_server: Starter, start_redis_server: Starter, mint: Mint, item: str, backend: str
) -> None:
    one, two = two_processes(backend, start_server, start_redis_server)
    admin = bearer(mint("admin", scope=["items:admin", "items:read"]))
    writer = bearer(mint("backend", scope=["items:write"]))
    member, _ = await join(two, item, mint("alice"))
    async with httpx.AsyncClient(timeout=5) as http:
        assert (
            await http.post(
                f"{one.http_url}/items/{item}/messages", json={"data": 1}, headers=writer
            )
        ).status_code == 200
        closed = await http.post(f"{one.http_url}/items/{item}/close", headers=admin)
        assert closed.status_code == 202
        frames, code, reason = await drain_until_closed(member)
        assert (code, reason) == (1008, "item_closed")
        for server in (one, two):
            again = await open_room(server, item, mint("alice"))
            assert await closed_with(again) == (1008, "item_closed")
            refused = await http.post(
                f"{server.http_url}/items/{item}/messages", json={"data": 2}, headers=writer
            )
            assert refused.status_code == 409, refused.text
            assert "the item is closed" in refused.json()["detail"]
        history = await http.get(f"{two.http_url}/items/{item}/messages", headers=admin)
        assert [m["data"] for m in history.json()["messages"]] == [1]  # still readable
        opened = await http.post(f"{two.http_url}/items/{item}/open", headers=admin)
        assert (opened.status_code, opened.json()) == (200, {"item_id": item, "action": "open"})
        back, welcome = await join(one, item, mint("alice"))
        async with back:
            assert welcome["seq"] == 1
            assert (
                await http.post(
                    f"{two.http_url}/items/{item}/messages", json={"data": 3}, headers=writer
                )
            ).status_code == 200
            frame = await recv_json(back)
            assert (frame["type"], frame["data"], frame["seq"]) == ("message", 3, 2)
    await assert_healthy(one)
    await assert_healthy(two)
