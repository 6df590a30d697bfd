"""Tokens on a live connection: expiry closes it unless a valid newer token for the
same user arrives first; the new token's permissions apply from then on."""

import asyncio
import json
from collections.abc import Callable

from tests.conftest import Mint
from tests.support.client import closed_with, join, recv_json, send_json
from tests.support.server import ServerProcess

Starter = Callable[..., ServerProcess]


async def test_a_refresh_keeps_the_connection_past_the_old_expiry(
    start_server: Starter, mint: Mint, item: str
) -> None:
    server = start_server(jwt_leeway_s=0)
    ws, _ = await join(server, item, mint("alice", ttl_s=3))
    async with ws:
        newer = mint("alice", ttl_s=120)
        await send_json(ws, {"type": "refresh", "token": newer})
        refreshed = await recv_json(ws)
        assert refreshed["type"] == "refreshed" and refreshed["exp"] > 0
        # Let the first token's expiry (3 s) pass: the time itself is what is tested.
        await asyncio.sleep(4)
        await send_json(ws, {"type": "publish", "data": "still here", "ref": "s"})
        frame = await recv_json(ws)
        assert (frame["type"], frame["ref"]) == ("message", "s")


async def test_without_refresh_the_connection_closes_at_expiry(
    start_server: Starter, mint: Mint, item: str
) -> None:
    server = start_server(jwt_leeway_s=0)
    ws, _ = await join(server, item, mint("alice", ttl_s=1))
    assert await closed_with(ws, timeout=10) == (1008, "token_expired")


async def test_a_refresh_for_another_user_closes(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    ws, _ = await join(server, item, mint("alice"))
    await send_json(ws, {"type": "refresh", "token": mint("mallory", ttl_s=7200)})
    assert await closed_with(ws) == (1008, "forbidden")


async def test_an_invalid_refresh_closes(server: ServerProcess, mint: Mint, item: str) -> None:
    ws, _ = await join(server, item, mint("alice"))
    await send_json(ws, {"type": "refresh", "token": "not.a.token"})
    assert await closed_with(ws) == (1008, "invalid_token")
    ws, _ = await join(server, item, mint("alice"))
    await send_json(ws, {"type": "refresh", "token": mint("alice", ttl_s=-600)})
    assert await closed_with(ws) == (1008, "token_expired")


async def test_a_refresh_that_does_not_extend_is_refused_but_harmless(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    ws, _ = await join(server, item, mint("alice", ttl_s=3600))
    async with ws:
        await send_json(ws, {"type": "refresh", "token": mint("alice", ttl_s=60)})
        assert (await recv_json(ws))["code"] == "invalid_refresh"
        await send_json(ws, {"type": "ping"})
        assert await recv_json(ws) == {"type": "pong"}


async def test_the_new_tokens_permissions_apply(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    ws, _ = await join(server, item, mint("alice", ttl_s=600))
    async with ws:
        read_only = mint("alice", ttl_s=1200, scope=["items:read"])
        await send_json(ws, {"type": "refresh", "token": read_only})
        assert (await recv_json(ws))["type"] == "refreshed"
        await send_json(ws, {"type": "publish", "data": 1, "ref": "w"})
        assert (await recv_json(ws))["code"] == "not_allowed"
    ws, _ = await join(server, item, mint("alice", ttl_s=600))
    await ws.send(
        json.dumps({"type": "refresh", "token": mint("alice", ttl_s=1200, items=["other"])})
    )
    assert await closed_with(ws) == (1008, "forbidden")
