"""Resume with ``?since=``: replay before live traffic, in order, no duplicates,
and ``recovered`` telling whether history still held everything."""

from tests.conftest import HISTORY_SIZE, Mint
from tests.support.client import join, publish_many, recv_json, send_json
from tests.support.server import ServerProcess


async def test_resume_replays_what_was_missed_then_live(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    await publish_many(server, item, mint("alice"), 5)
    ws, welcome = await join(server, item, mint("bob"), since=2)
    async with ws:
        assert welcome["seq"] == 5 and welcome["recovered"] is True
        replayed = [await recv_json(ws) for _ in range(3)]
        assert [(f["type"], f["seq"], f["data"]) for f in replayed] == [
            ("message", 3, 2),
            ("message", 4, 3),
            ("message", 5, 4),
        ]
        assert all("ref" not in f for f in replayed)  # a replay is nobody's ack
        await send_json(ws, {"type": "publish", "data": "live", "ref": "l"})
        live = await recv_json(ws)
        assert live["seq"] == 6 and live["ref"] == "l"


async def test_resume_at_the_latest_seq_replays_nothing(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    await publish_many(server, item, mint(), 3)
    ws, welcome = await join(server, item, mint("bob"), since=3)
    async with ws:
        assert welcome["seq"] == 3 and welcome["recovered"] is True
        await send_json(ws, {"type": "ping"})
        assert await recv_json(ws) == {"type": "pong"}


async def test_resume_beyond_history_is_not_recovered(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    total = HISTORY_SIZE + 5
    await publish_many(server, item, mint(), total)
    ws, welcome = await join(server, item, mint("bob"), since=1)
    async with ws:
        assert welcome["seq"] == total and welcome["recovered"] is False
        replayed = [await recv_json(ws) for _ in range(HISTORY_SIZE)]
        assert [f["seq"] for f in replayed] == list(range(total - HISTORY_SIZE + 1, total + 1))
        await send_json(ws, {"type": "ping"})
        assert await recv_json(ws) == {"type": "pong"}


async def test_resume_from_a_seq_the_room_never_reached(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    """A client that knew a room before a restart (memory history lost) gets what
    the room has, and is told that it did not recover."""
    await publish_many(server, item, mint(), 2)
    ws, welcome = await join(server, item, mint("bob"), since=50)
    async with ws:
        assert welcome["seq"] == 2 and welcome["recovered"] is False
        assert [(await recv_json(ws))["seq"] for _ in range(2)] == [1, 2]


async def test_without_since_nothing_is_replayed(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    await publish_many(server, item, mint(), 3)
    ws, welcome = await join(server, item, mint("bob"))
    async with ws:
        assert welcome["seq"] == 3 and welcome["recovered"] is True
        await send_json(ws, {"type": "ping"})
        assert await recv_json(ws) == {"type": "pong"}
