"""A room crossing ITEMROOMS_PRESENCE_LIST_MAX both ways, as the demo page (and
itemrooms.js under it) shows it in Chromium: a count in a large room, names again
once it is small."""

import re
from collections.abc import Callable

import pytest
from playwright.async_api import expect

from tests.browser.conftest import OpenPage
from tests.browser.test_demo_page import WAIT_MS, connect, demo_path
from tests.conftest import Mint
from tests.support.client import join, recv_type
from tests.support.server import ServerProcess

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.mark.browser
async def test_the_demo_page_counts_a_large_room_and_lists_a_small_one(
    open_page: OpenPage, start_server: Callable[..., ServerProcess], mint: Mint, item: str
) -> None:
    # Large above 2 users; every change sent at once; no grace, so leaves count at once.
    server = start_server(presence_list_max=2, presence_interval_ms=0, presence_grace_s=0)
    page = await open_page(server.http_url + demo_path(item, mint("alice")))
    await connect(page, item, "alice")
    members = page.locator("#members")
    await expect(members).to_have_text("Nobody else is here.")
    bob, welcome_bob = await join(server, item, mint("bob"))
    await expect(members).to_have_text(f"Also here: bob ({welcome_bob['client_id']})")
    carol, welcome_carol = await join(server, item, mint("carol"))
    assert (welcome_carol["presence_mode"], welcome_carol["member_count"]) == ("count", 3)
    # Three users: a count, and the names the page already had.
    await expect(members).to_have_text(re.compile(r"^2 others here \(among them bob "))
    state = await page.evaluate("[window.room.presenceMode, window.room.memberCount]")
    assert state == ["count", 3]
    count = await recv_type(bob, "presence_count")
    assert (count["member_count"], count["joined"], count["left"]) == (3, 1, 0)
    await carol.close()
    # Back to two: the whole list, and names again.
    listed = await recv_type(bob, "presence_list")
    assert sorted(m["user"] for m in listed["members"]) == ["alice", "bob"]
    await expect(members).to_have_text(f"Also here: bob ({welcome_bob['client_id']})")
    await page.wait_for_function("window.room.presenceMode === 'list'", timeout=WAIT_MS)
    assert await page.evaluate("window.room.memberCount") == 2
    await bob.close()
    await expect(members).to_have_text("Nobody else is here.")
    assert await page.evaluate("window.room.memberCount") == 1
    assert welcome_bob["member_count"] == 2
