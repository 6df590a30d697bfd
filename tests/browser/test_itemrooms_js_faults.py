"""itemrooms.js in Chromium against real servers under real faults: an acknowledgement
lost in a disconnect (a proxy holds what the server says, then cuts), a Redis that comes
back empty (1012 ``epoch_changed``, a new epoch), and the demo page across a restart of
a memory-backend server (its history gone: a new epoch)."""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import expect

from tests.browser.conftest import OpenPage
from tests.browser.test_demo_page import WAIT_MS, connect, demo_path
from tests.browser.test_itemrooms_js import join, wait_for
from tests.browser.test_itemrooms_js_publishes import PUBLISH, outcome
from tests.client.cut_proxy import CutProxy
from tests.conftest import Mint
from tests.support.client import join as join_raw
from tests.support.client import recv_type
from tests.support.redis_server import PrivateRedis
from tests.support.server import ServerProcess

pytestmark = pytest.mark.asyncio(loop_scope="module")

WAIT = 10.0
QUICK = {"baseDelayMs": 50, "maxDelayMs": 500}


@pytest_asyncio.fixture(loop_scope="module")
async def proxy(server: ServerProcess) -> AsyncIterator[CutProxy]:
    async with CutProxy(server.port).running() as cut:
        yield cut


async def history(server: ServerProcess, item: str, token: str) -> list[Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.http_url, headers=headers, timeout=5) as http:
        response = await http.get(f"/items/{item}/messages", params={"since": 0})
    assert response.status_code == 200, response.text
    return [m["data"] for m in response.json()["messages"]]


@pytest.mark.browser
async def test_a_publish_whose_ack_is_lost_in_a_disconnect_is_settled_once(
    open_page: OpenPage, server: ServerProcess, proxy: CutProxy, mint: Mint, item: str
) -> None:
    page = await open_page(proxy.http_url + "/")  # the page, and so its origin, via the proxy
    await join(page, item, mint("alice"), **QUICK)
    observer, _ = await join_raw(server, item, mint("bob"))
    async with observer:
        await page.evaluate(PUBLISH, ["before", "before", {}])
        before = (await outcome(page, "before"))["frame"]
        proxy.hold()  # what the server says from now on is lost
        await page.evaluate(PUBLISH, ["lost", "lost ack", {}])
        await recv_type(observer, "message", WAIT)  # "before"
        stored = await recv_type(observer, "message", WAIT)
        assert stored["data"] == "lost ack" and stored["id"], stored  # the page never heard
        proxy.cut()  # and the connection dies without a close frame

        settled = (await outcome(page, "lost"))["frame"]
        assert (settled["seq"], settled["id"]) == (stored["seq"], stored["id"]), settled
        await page.evaluate(PUBLISH, ["after", "after", {}])
        after = (await outcome(page, "after"))["frame"]
        assert after["seq"] == stored["seq"] + 1
        assert (await recv_type(observer, "message", WAIT))["seq"] == after["seq"]  # no copy
    await wait_for(page, "window.__log.message.length === 3")
    got = await page.evaluate("window.__log.message.map((m) => [m.seq, m.data])")
    assert got == [[before["seq"], "before"], [stored["seq"], "lost ack"], [after["seq"], "after"]]
    assert await history(server, item, mint("bob")) == ["before", "lost ack", "after"]
    opened = await page.evaluate("window.__log.status.filter((s) => s.state === 'open')")
    assert [s["recovered"] for s in opened] == [True, True], opened


@pytest.mark.browser
async def test_redis_coming_back_empty_closes_1012_and_the_page_learns_recovered_false(
    open_page: OpenPage,
    start_redis_server: Callable[..., ServerProcess],
    mint: Mint,
    item: str,
    tmp_path: Path,
) -> None:
    redis = PrivateRedis(tmp_path).start()
    try:
        server = start_redis_server(redis_url=redis.url)
        page = await open_page(server.http_url + "/")
        welcome = await join(page, item, mint("alice"), **QUICK)
        for n in range(2):
            await page.evaluate(PUBLISH, [str(n), n, {}])
            await outcome(page, str(n))
        await asyncio.to_thread(redis.stop)
        await asyncio.to_thread(redis.start)  # empty: the room's sequence and history are gone
        await page.wait_for_function(
            "window.__log.status.filter((s) => s.state === 'open').length === 2",
            timeout=3 * WAIT_MS,
        )
        closes = await page.evaluate("window.__log.close")
        assert [(c["code"], c["reason"], c["willRetry"]) for c in closes][:1] == [
            (1012, "epoch_changed", True)
        ], closes
        opened = await page.evaluate("window.__log.status.filter((s) => s.state === 'open')")
        assert (opened[-1]["recovered"], opened[-1]["reset"]) == (False, True), opened
        epoch = await page.evaluate("window.__room.epoch")
        assert epoch and epoch != welcome["epoch"], (epoch, welcome)
        await page.evaluate(PUBLISH, ["new", "in the new epoch", {}])
        sent = (await outcome(page, "new"))["frame"]
        await wait_for(page, "window.__log.message.length === 3")
        last = await page.evaluate("window.__log.message.at(-1)")
        assert (last["seq"], last["data"]) == (sent["seq"], "in the new epoch"), last
    finally:
        redis.stop()


@pytest.mark.browser
# Chromium logs each refused reconnection attempt while the server is down.
@pytest.mark.expected_console_errors(r"WebSocket connection to .* net::ERR_CONNECTION_REFUSED")
async def test_the_demo_page_goes_on_after_the_room_lost_its_history(
    context: Any,
    open_page: OpenPage,
    start_server: Callable[..., ServerProcess],
    mint: Mint,
    item: str,
) -> None:
    server = start_server()  # the memory backend: a restart forgets every room
    await context.add_init_script(f"window.itemroomsDemo = {json.dumps(QUICK)};")
    page = await open_page(server.http_url + demo_path(item, mint("alice")))
    await connect(page, item, "alice")
    for text in ("one", "two"):
        await page.fill("#messageText", text)
        await page.press("#messageText", "Enter")
    messages = page.locator("#messages li.message")
    await expect(messages).to_have_count(2, timeout=WAIT_MS)

    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(start_server, port=server.port)
    await expect(page.locator("#status")).to_contain_text(
        "(the room lost its history)", timeout=WAIT_MS
    )
    await expect(page.locator("#messages li.system").last).to_have_text(
        "the room lost its history: what follows is its new sequence"
    )
    await page.fill("#messageText", "three")
    await page.press("#messageText", "Enter")
    await expect(messages).to_have_text(["#1alice: one", "#2alice: two", "#1alice: three"])
