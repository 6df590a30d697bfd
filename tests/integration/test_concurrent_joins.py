"""Many members joining one room at once: nobody is lost, everyone ends up
knowing everyone (welcome members plus join events), and every message reaches all."""

import asyncio

from tests.conftest import Mint
from tests.support.client import join, recv_json, send_json
from tests.support.server import ServerProcess

MEMBERS = 60


async def test_concurrent_joins_lose_nobody(server: ServerProcess, mint: Mint, item: str) -> None:
    joined = await asyncio.gather(*(join(server, item, mint(f"u{i}")) for i in range(MEMBERS)))
    sockets = [ws for ws, _ in joined]
    ids = {welcome["client_id"] for _, welcome in joined}
    assert len(ids) == MEMBERS
    try:
        # One marker message; each member applies presence events until it arrives.
        await send_json(sockets[0], {"type": "publish", "data": "marker"})

        async def view(index: int) -> set[str]:
            ws, welcome = joined[index]
            known = {m["client_id"] for m in welcome["members"]}
            while True:
                frame = await recv_json(ws, timeout=10)
                if frame["type"] == "message":
                    assert frame["data"] == "marker" and frame["seq"] == 1
                    return known
                assert frame["type"] == "presence" and frame["event"] == "join", frame
                assert frame["client_id"] not in known, "told twice about the same member"
                known.add(frame["client_id"])

        views = await asyncio.gather(*(view(i) for i in range(MEMBERS)))
        for (_, welcome), known in zip(joined, views, strict=True):
            assert known == ids - {welcome["client_id"]}
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))
