"""What an operator reads about refused handshakes: one INFO line each (reason, item,
client, origin; never the token), a bounded number in a storm plus a summary, and an
access log that never says "accepted" for a refused client."""

import asyncio
import re
from collections.abc import Callable

from itemrooms.api.rejection_log import BURST, LINES_PER_S
from tests.conftest import Mint, assert_healthy
from tests.support.client import closed_with, join, open_room
from tests.support.server import ServerProcess

Starter = Callable[..., ServerProcess]
STORM = 2000


async def test_each_refusal_is_one_line_and_the_access_log_tells_the_outcome(
    start_server: Starter, mint: Mint, item: str
) -> None:
    server = start_server(access_log=True)
    bad = mint(items=["elsewhere"])
    ws = await open_room(server, item, bad, origin=server.http_url)
    assert await closed_with(ws) == (1008, "forbidden")
    good, _ = await join(server, item, mint())
    await good.close()
    assert server.wait_for_output("[accepted]")
    lines = server.output.splitlines()
    refused = [line for line in lines if "refused forbidden" in line]
    assert len(refused) == 1, lines
    assert f"item {item}, client 127.0.0.1:" in refused[0]
    assert f"origin {server.http_url}" in refused[0]
    access = [line for line in lines if f'"WebSocket /items/{item}/ws' in line]
    assert [line.rsplit("[", 1)[1] for line in access] == ["refused: forbidden]", "accepted]"]
    assert sum("connection open" in line for line in lines) <= 1  # the good one only
    assert bad.split(".")[2] not in server.output


async def test_a_storm_of_bad_tokens_writes_a_bounded_number_of_lines_and_a_summary(
    start_server: Starter, mint: Mint, item: str
) -> None:
    server = start_server()  # the default: no access log, INFO for refusals

    async def refused() -> None:
        ws = await open_room(server, item, "not.a.token")
        assert await closed_with(ws) == (1008, "invalid_token")

    started = asyncio.get_running_loop().time()
    for batch in range(0, STORM, 200):
        await asyncio.gather(*(refused() for _ in range(min(200, STORM - batch))))
    took = asyncio.get_running_loop().time() - started
    await assert_healthy(server)
    server.stop()  # the summary of what was left out is written at shutdown at the latest
    one_by_one = [line for line in server.lines if "refused invalid_token: item" in line]
    assert len(one_by_one) <= BURST + LINES_PER_S * (took + 1) + 1, len(one_by_one)
    summaries = [
        int(m.group(1))
        for line in server.lines
        if (m := re.search(r"refused (\d+) more handshakes, not logged one by one: ", line))
    ]
    assert len(one_by_one) + sum(summaries) == STORM
    assert all("invalid_token" in line for line in server.lines if "more handshakes" in line)
