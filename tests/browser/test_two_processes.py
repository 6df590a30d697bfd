"""Two ``itemrooms serve`` processes on the Redis backend, a browser tab on each,
one room: both tabs see every message in one order, and presence shows both."""

import re
from collections.abc import Callable

import pytest
from playwright.async_api import expect

from tests.browser.conftest import OpenPage
from tests.browser.test_demo_page import WAIT_MS, connect, demo_path
from tests.conftest import Mint
from tests.support.server import ServerProcess

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.mark.browser
async def test_a_tab_on_each_process_shares_the_room(
    open_page: OpenPage, start_redis_server: Callable[..., ServerProcess], mint: Mint, item: str
) -> None:
    one, two = start_redis_server(), start_redis_server()
    page_a = await open_page(one.http_url + demo_path(item, mint("alice")))
    page_b = await open_page(two.http_url + demo_path(item, mint("bob")))
    await connect(page_a, item, "alice")
    await connect(page_b, item, "bob")
    await expect(page_b.locator("#members")).to_contain_text("alice")
    await expect(page_a.locator("#members")).to_contain_text("bob")

    for page, text in [
        (page_a, "one from alice"),
        (page_b, "one from bob"),
        (page_a, "two from alice"),
    ]:
        await page.fill("#messageText", text)
        await page.press("#messageText", "Enter")
    for page in (page_a, page_b):
        await expect(page.locator("#messages li.message")).to_have_count(3, timeout=WAIT_MS)
    lines_a = await page_a.locator("#messages li.message").all_inner_texts()
    lines_b = await page_b.locator("#messages li.message").all_inner_texts()
    assert lines_a == lines_b
    assert [re.match(r"#(\d+)", line).group(1) for line in lines_a] == ["1", "2", "3"]  # type: ignore[union-attr]
