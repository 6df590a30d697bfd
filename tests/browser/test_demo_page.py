"""The demo page and the wire protocol, seen from a real browser (headless Chromium):
the page is served, two tabs chat, and close codes and reasons reach ``CloseEvent``."""

import re
import time
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page, expect

from tests.browser.conftest import RECORD_SOCKETS, OpenPage
from tests.conftest import Mint
from tests.support.server import ServerProcess

pytestmark = pytest.mark.asyncio(loop_scope="module")

WAIT_MS = 10_000

# Opens a WebSocket and resolves with how it ended: bounded by a JavaScript timer,
# so a server that never closes fails the test instead of hanging it.
OPEN_UNTIL_CLOSED = """
async ([url, protocols]) => await new Promise((resolve, reject) => {
  const ws = protocols === null ? new WebSocket(url) : new WebSocket(url, protocols);
  const frames = [];
  const timer = setTimeout(() => {
    ws.close();
    reject(new Error(`no close within 5 s: ${url}`));
  }, 5000);
  let opened = false;
  ws.onopen = () => { opened = true; };
  ws.onmessage = (e) => frames.push(e.data);
  ws.onclose = (e) => {
    clearTimeout(timer);
    const { code, reason, wasClean } = e;
    resolve({ code, reason, wasClean, opened, protocol: ws.protocol, frames });
  };
})
"""

# Joins with the token in the subprotocol list; resolves with the negotiated
# subprotocol and the first frame, after closing normally.
JOIN_WITH_SUBPROTOCOL = """
async ([url, token]) => await new Promise((resolve, reject) => {
  const ws = new WebSocket(url, ["itemrooms.v1", "bearer." + token]);
  const timer = setTimeout(() => { ws.close(); reject(new Error("no welcome within 5 s")); }, 5000);
  let first = null;
  ws.onmessage = (e) => {
    if (first !== null) return;
    first = JSON.parse(e.data);
    ws.close(1000);
  };
  ws.onclose = (e) => {
    clearTimeout(timer);
    if (first === null) reject(new Error(`closed before a frame: ${e.code} ${e.reason}`));
    else resolve({ protocol: ws.protocol, first, code: e.code });
  };
})
"""


def demo_path(item: str, token: str) -> str:
    return f"/#item={item}&token={token}"


async def connect(page: Page, item: str, user: str) -> None:
    await page.click("#connect")
    await expect(page.locator("#status")).to_contain_text(
        f"connected to item {item} as {user}", timeout=WAIT_MS
    )


async def closed_in_browser(
    page: Page, url: str, protocols: list[str] | None = None
) -> dict[str, Any]:
    ended: dict[str, Any] = await page.evaluate(OPEN_UNTIL_CLOSED, [url, protocols])
    return ended


@pytest.mark.browser
async def test_demo_page_is_served_and_prefilled_from_the_fragment(
    open_page: OpenPage, mint: Mint, item: str
) -> None:
    token = mint("alice")
    page = await open_page(demo_path(item, token))

    assert await page.evaluate("document.contentType") == "text/html"
    await expect(page).to_have_title("itemrooms demo")
    for element_id in ("itemId", "token", "messageText", "messages"):
        await expect(page.locator(f"#{element_id}")).to_have_count(1)
    await expect(page.locator("#itemId")).to_have_value(item)
    await expect(page.locator("#token")).to_have_value(token)
    # Read once, then dropped from the address bar (and so from history and copied links).
    assert await page.evaluate("location.hash") == ""
    await expect(page.locator("#status")).to_have_text("not connected")
    # Nothing to send before joining.
    await expect(page.locator("#messageText")).to_be_disabled()
    await expect(page.locator("#send")).to_be_disabled()


@pytest.mark.browser
async def test_two_pages_chat_and_see_join_and_leave(
    open_page: OpenPage, mint: Mint, item: str
) -> None:
    page_a = await open_page(demo_path(item, mint("alice")))
    await connect(page_a, item, "alice")
    await expect(page_a.locator("#members")).to_have_text("Nobody else is here.")

    page_b = await open_page(demo_path(item, mint("bob")))
    await connect(page_b, item, "bob")
    await expect(page_a.locator("#messages li.presence")).to_contain_text(
        re.compile(r"bob \(\S+\) joined"), timeout=WAIT_MS
    )
    await expect(page_a.locator("#members")).to_contain_text("Also here: bob (")
    await expect(page_b.locator("#members")).to_contain_text("Also here: alice (")

    # B clicks Send.
    await page_b.fill("#messageText", "hello from bob")
    await page_b.click("#send")
    for page in (page_a, page_b):
        await expect(page.locator("#messages li.message")).to_contain_text(
            "bob: hello from bob", timeout=WAIT_MS
        )
    await expect(page_b.locator("#messageText")).to_have_value("")

    # A presses Enter.
    await page_a.fill("#messageText", "hi bob")
    await page_a.press("#messageText", "Enter")
    for page in (page_a, page_b):
        await expect(page.locator("#messages li.message").nth(1)).to_contain_text(
            "alice: hi bob", timeout=WAIT_MS
        )

    await page_b.close()
    await expect(page_a.locator("#messages li.presence")).to_contain_text(
        [re.compile(r"bob \(\S+\) joined"), re.compile(r"bob \(\S+\) left the chat")],
        timeout=WAIT_MS,
    )
    await expect(page_a.locator("#members")).to_have_text("Nobody else is here.")
    await expect(page_a.locator("#status")).to_contain_text(f"connected to item {item} as alice")


@pytest.mark.browser
async def test_close_codes_and_reasons_reach_the_browser(
    open_page: OpenPage, server: ServerProcess, mint: Mint, item: str
) -> None:
    page = await open_page("/")
    url = server.ws_url(item)

    ended = await closed_in_browser(page, url)
    assert (ended["code"], ended["reason"]) == (1008, "missing_token"), ended
    assert ended["opened"] and ended["frames"] == [], ended

    ended = await closed_in_browser(page, url + "?token=garbage")
    assert (ended["code"], ended["reason"]) == (1008, "invalid_token"), ended
    assert ended["frames"] == [], ended

    now = int(time.time())
    expired = mint("alice", extra={"exp": now - 120, "iat": now - 600})
    ended = await closed_in_browser(page, url, ["itemrooms.v1", "bearer." + expired])
    assert (ended["code"], ended["reason"]) == (1008, "token_expired"), ended
    # The browser would fail the handshake (1006, no reason) had the server not picked ours.
    assert ended["protocol"] == "itemrooms.v1", ended
    assert ended["frames"] == [], ended


@pytest.mark.browser
async def test_demo_page_shows_the_close_reason_for_a_bad_token(
    open_page: OpenPage, item: str
) -> None:
    page = await open_page(demo_path(item, "garbage"))
    await page.click("#connect")
    await expect(page.locator("#status")).to_contain_text("1008 invalid_token", timeout=WAIT_MS)
    await expect(page.locator("#messages")).to_contain_text("connection closed: 1008 invalid_token")
    # Ready to try again with another token.
    await expect(page.locator("#connect")).to_be_enabled()
    await expect(page.locator("#messageText")).to_be_disabled()


@pytest.mark.browser
async def test_token_in_the_subprotocol_list_joins(
    open_page: OpenPage, server: ServerProcess, mint: Mint, item: str
) -> None:
    token = mint("alice")
    page = await open_page("/")
    joined = await page.evaluate(JOIN_WITH_SUBPROTOCOL, [server.ws_url(item), token])
    assert joined["protocol"] == "itemrooms.v1", joined
    assert joined["first"]["type"] == "welcome", joined
    assert (joined["first"]["user"], joined["first"]["item_id"]) == ("alice", item), joined


@pytest.mark.browser
async def test_demo_page_sends_its_token_as_a_subprotocol(
    context: BrowserContext, open_page: OpenPage, server: ServerProcess, mint: Mint, item: str
) -> None:
    token = mint("alice")
    await context.add_init_script(RECORD_SOCKETS)
    page = await open_page(demo_path(item, token))
    await connect(page, item, "alice")

    sockets = await page.evaluate(
        "window.__sockets.map((s) => ({ url: s.url, protocols: s.protocols,"
        " protocol: s.socket.protocol, readyState: s.socket.readyState }))"
    )
    assert len(sockets) == 1, sockets
    (sock,) = sockets
    assert sock["protocols"] == ["itemrooms.v1", f"bearer.{token}"], sock
    assert sock["protocol"] == "itemrooms.v1", sock
    assert sock["readyState"] == 1, sock  # OPEN
    assert token not in sock["url"] and "?" not in sock["url"], sock
    # Kept out of URLs, and out of the server's output too.
    assert token not in server.output
