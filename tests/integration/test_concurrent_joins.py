"""Many members joining one room at once: nobody is lost, everyone ends up
knowing everyone (welcome members plus join events, which come in batches), and every
message reaches all."""

import asyncio

from tests.conftest import Mint
from tests.support.client import join, known_users, recv_json, send_json
from tests.support.server import ServerProcess

MEMBERS = 60


async def test_concurrent_joins_lose_nobody(server: ServerProcess, mint: Mint, item: str) -> None:
    joined = await asyncio.gather(*(join(server, item, mint(f"u{i}")) for i in range(MEMBERS)))
    sockets = [ws for ws, _ in joined]
    ids = {welcome["client_id"] for _, welcome in joined}
    assert len(ids) == MEMBERS
    try:
        await send_json(sockets[0], {"type": "publish", "data": "marker"})

        async def view(index: int) -> set[str]:
            ws, welcome = joined[index]
            known, others = await known_users(ws, welcome, MEMBERS - 1, timeout=10)
            if not others:  # the marker may come before or after the last presence batch
                others.append(await recv_json(ws, timeout=10))
            assert [(f["type"], f["data"], f["seq"]) for f in others] == [("message", "marker", 1)]
            return known

        users = {f"u{i}" for i in range(MEMBERS)}
        views = await asyncio.gather(*(view(i) for i in range(MEMBERS)))
        for (_, welcome), known in zip(joined, views, strict=True):
            assert known == users - {welcome["user"]}
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))
