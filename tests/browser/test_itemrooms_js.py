"""itemrooms.js, the browser client, in real headless Chromium: chat through its API,
reconnect and resume across a server restart, refresh an expiring token on a live
connection, and stop for good on a close reason no retry can fix."""

import base64
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, expect

from tests.browser.conftest import RECORD_SOCKETS, OpenPage
from tests.browser.test_demo_page import WAIT_MS, connect, demo_path
from tests.conftest import Mint
from tests.support.client import publish_many
from tests.support.server import ServerProcess

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Imports itemrooms.js into the page and joins a room; every event lands in window.__log.
JOIN = """
async ([itemId, token, options]) => {
  const { connect } = await import("/static/itemrooms.js");
  const log = {};
  const types = ["welcome", "message", "presence", "members", "status", "close", "error",
                 "refreshed"];
  for (const type of types) log[type] = [];
  const room = connect({ itemId, token, ...options });
  for (const type of types) {
    room.on(type, (detail) => log[type].push(
      detail instanceof Error ? { code: detail.code, detail: detail.detail } : detail));
  }
  window.__log = log;
  window.__room = room;
}
"""


SOCKETS = """
window.__sockets.map((s) => ({ url: s.url, readyState: s.socket.readyState, frames: s.frames }))
"""


def claims_of(token: str) -> dict[str, Any]:
    """A JWT's claims, unverified."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def demo_options(**options: Any) -> str:
    """An init script passing options to the demo page's ``connect()``."""
    return f"window.itemroomsDemo = {json.dumps(options)};"


async def join(page: Page, item: str, token: str, **options: Any) -> dict[str, Any]:
    """Join with itemrooms.js in ``page``; return the welcome frame."""
    await page.evaluate(JOIN, [item, token, options])
    await page.wait_for_function("window.__log.welcome.length > 0", timeout=WAIT_MS)
    welcome: dict[str, Any] = await page.evaluate("window.__log.welcome[0]")
    return welcome


async def wait_for(page: Page, expression: str) -> None:
    """Until a JavaScript expression holds in the page (bounded)."""
    await page.wait_for_function(expression, timeout=WAIT_MS)


@pytest.mark.browser
async def test_two_pages_chat_through_itemrooms_js(
    open_page: OpenPage, mint: Mint, item: str
) -> None:
    page_a, page_b = await open_page("/"), await open_page("/")
    welcome_a = await join(page_a, item, mint("alice"))
    assert welcome_a["members"] == [] and welcome_a["seq"] == 0, welcome_a
    welcome_b = await join(page_b, item, mint("bob"))
    assert [m["user"] for m in welcome_b["members"]] == ["alice"], welcome_b

    await wait_for(page_a, "window.__log.presence.length === 1")
    assert await page_a.evaluate("window.__room.members.map((m) => m.user)") == ["bob"]
    assert await page_b.evaluate("window.__room.members.map((m) => m.user)") == ["alice"]

    # publish() resolves with the sender's own copy: the ref came back, with a seq.
    sent = await page_b.evaluate("window.__room.publish({ text: 'hello from bob' })")
    assert sent["sender"]["user"] == "bob" and sent["data"] == {"text": "hello from bob"}, sent
    assert sent["seq"] == 1 and sent["ref"], sent
    sent = await page_a.evaluate("window.__room.publish('hi bob')")
    assert (sent["seq"], sent["data"]) == (2, "hi bob"), sent

    for page in (page_a, page_b):
        await wait_for(page, "window.__log.message.length === 2")
        got = await page.evaluate("window.__log.message.map((m) => [m.seq, m.sender.user, m.data])")
        assert got == [[1, "bob", {"text": "hello from bob"}], [2, "alice", "hi bob"]], got
        assert await page.evaluate("window.__room.seq") == 2

    await page_b.evaluate("window.__room.close()")
    await wait_for(page_a, "window.__log.presence.length === 2")
    leave = await page_a.evaluate("window.__log.presence[1]")
    assert (leave["event"], leave["user"]) == ("leave", "bob"), leave
    assert await page_a.evaluate("window.__room.members") == []
    statuses = await page_b.evaluate("window.__log.status")
    assert [s["state"] for s in statuses] == ["connecting", "open", "closed"], statuses
    assert statuses[-1]["reason"] == "closed_by_client", statuses
    rejected = await page_b.evaluate(
        "window.__room.publish('too late').then(() => null, (err) => err.code)"
    )
    assert rejected == "not_connected"


@pytest.mark.browser
async def test_publish_rejects_with_the_error_frame_for_its_ref(
    open_page: OpenPage, mint: Mint, item: str
) -> None:
    page = await open_page("/")
    await join(page, item, mint("reader", scope=["items:read"]))
    rejected = await page.evaluate(
        "window.__room.publish('hi').then(() => null, (err) => [err.name, err.code])"
    )
    assert rejected == ["RoomError", "not_allowed"]
    # Answered through the promise, not also as an `error` event; still connected.
    assert await page.evaluate("window.__log.error") == []
    assert await page.evaluate("window.__room.state") == "open"


@pytest.mark.browser
# Chromium logs each refused reconnection attempt while the server is down.
@pytest.mark.expected_console_errors(r"WebSocket connection to .* net::ERR_CONNECTION_REFUSED")
async def test_the_page_resumes_after_a_server_restart_with_each_message_once(
    context: BrowserContext,
    open_page: OpenPage,
    start_redis_server: Callable[..., ServerProcess],
    mint: Mint,
    item: str,
) -> None:
    # Two processes share the room's history in Redis: the page is on `one`, which is
    # restarted on the same port; others publish through `two` while it is away.
    one = start_redis_server(history_size=100)
    two = start_redis_server(history_size=100)
    await context.add_init_script(RECORD_SOCKETS)
    await context.add_init_script(demo_options(baseDelayMs=100, maxDelayMs=1000))
    page = await open_page(one.http_url + demo_path(item, mint("alice")))
    await connect(page, item, "alice")
    for text in ("before one", "before two"):
        await page.fill("#messageText", text)
        await page.press("#messageText", "Enter")
    messages = page.locator("#messages li.message")
    await expect(messages).to_have_count(2, timeout=WAIT_MS)

    one.stop()
    await expect(page.locator("#status")).to_contain_text("reconnecting", timeout=WAIT_MS)
    await expect(page.locator("#messages li.system").first).to_have_text(
        "connection closed: 1001 going_away; reconnecting"
    )
    await expect(page.locator("#messageText")).to_be_disabled()
    headers = {"Authorization": f"Bearer {mint('carol')}"}
    async with httpx.AsyncClient(base_url=two.http_url, headers=headers, timeout=5) as http:
        for n in range(1, 4):
            response = await http.post(f"/items/{item}/messages", json={"data": f"away {n}"})
            assert response.status_code == 200, response.text
            assert response.json()["seq"] == 2 + n

    start_redis_server(port=one.port, history_size=100)
    # And more while the page is reconnecting (replayed or live: either way, once each).
    await publish_many(two, item, mint("dave"), 2)
    await expect(page.locator("#status")).to_contain_text(
        f"connected to item {item} as alice", timeout=WAIT_MS
    )
    await expect(page.locator("#status")).not_to_contain_text("missed")
    await expect(messages).to_have_count(7, timeout=WAIT_MS)
    expected = [
        "#1alice: before one",
        "#2alice: before two",
        "#3carol: away 1",
        "#4carol: away 2",
        "#5carol: away 3",
        "#6dave: 0",
        "#7dave: 1",
    ]
    assert await messages.all_inner_texts() == expected

    # Live again: a message from the page itself comes back once, after the others.
    await page.fill("#messageText", "after")
    await page.press("#messageText", "Enter")
    await expect(messages).to_have_count(8, timeout=WAIT_MS)
    assert await messages.all_inner_texts() == [*expected, "#8alice: after"]

    sockets = await page.evaluate(SOCKETS)
    assert "since" not in sockets[0]["url"], sockets[0]["url"]
    # Every reconnection resumed after the last message seen before the restart, in the
    # epoch of the first welcome: the room's sequence lives on in Redis.
    epoch = sockets[0]["frames"][0]["epoch"]
    resumed = f"?{urlencode({'since': 2, 'epoch': epoch})}"
    assert all(s["url"].endswith(resumed) for s in sockets[1:]), [s["url"] for s in sockets]
    assert all(s["frames"][0]["epoch"] == epoch for s in sockets[1:] if s["frames"]), sockets
    assert sockets[-1]["readyState"] == 1


@pytest.mark.browser
async def test_an_expiring_token_is_refreshed_on_the_live_connection(
    context: BrowserContext,
    open_page: OpenPage,
    start_server: Callable[..., ServerProcess],
    mint: Mint,
    item: str,
) -> None:
    server = start_server(jwt_leeway_s=0)
    short, longer = mint("alice", ttl_s=5), mint("alice", ttl_s=3600)
    # The page's token source hands out the short token first, then the longer one.
    await context.add_init_script(
        f"""
        window.__tokens = {json.dumps([short, longer])};
        window.__tokenCalls = 0;
        window.itemroomsDemo = {{ token: () => {{
          window.__tokenCalls += 1;
          return window.__tokens.length > 1 ? window.__tokens.shift() : window.__tokens[0];
        }} }};
        """
    )
    await context.add_init_script(RECORD_SOCKETS)
    page = await open_page(server.http_url + demo_path(item, ""))
    await connect(page, item, "alice")
    status = await page.locator("#status").inner_text()
    await page.evaluate(
        "window.__states = []; window.room.on('status', (s) => window.__states.push(s.state))"
    )

    # Past the short token's exp: the server would have closed with token_expired.
    await page.wait_for_function(
        f"Date.now() / 1000 > {claims_of(short)['exp']} + 0.5", timeout=WAIT_MS
    )
    await page.fill("#messageText", "still here")
    await page.press("#messageText", "Enter")
    await expect(page.locator("#messages li.message")).to_have_text(["#1alice: still here"])

    # Nothing the user could notice: the same connection, the same status line.
    await expect(page.locator("#status")).to_have_text(status)
    await expect(page.locator("#messages li.system")).to_have_count(0)
    assert await page.evaluate("window.__states") == []
    sockets = await page.evaluate(SOCKETS)
    assert len(sockets) == 1 and sockets[0]["readyState"] == 1, sockets
    refreshed = [f for f in sockets[0]["frames"] if f["type"] == "refreshed"]
    assert refreshed == [{"type": "refreshed", "exp": claims_of(longer)["exp"]}], sockets
    assert await page.evaluate("window.__tokenCalls") == 2


@pytest.mark.browser
@pytest.mark.parametrize(
    ("claims", "reason"),
    [({"token": "garbage"}, "invalid_token"), ({"items": ["elsewhere"]}, "forbidden")],
)
async def test_a_fatal_close_reason_is_shown_and_not_retried(
    context: BrowserContext,
    open_page: OpenPage,
    mint: Mint,
    item: str,
    claims: dict[str, Any],
    reason: str,
) -> None:
    token = claims.get("token") or mint("alice", items=claims["items"])
    await context.add_init_script(RECORD_SOCKETS)
    # Fake timers: a retry would be scheduled with setTimeout, so running the clock far
    # past the longest backoff shows that none is.
    await context.clock.install()
    page = await open_page(demo_path(item, token))
    await page.click("#connect")
    await expect(page.locator("#status")).to_have_text(f"closed: 1008 {reason}", timeout=WAIT_MS)
    await expect(page.locator("#messages li.system")).to_have_text(
        [f"connection closed: 1008 {reason}"]
    )
    await page.clock.run_for(120_000)
    await page.evaluate("new Promise((resolve) => requestAnimationFrame(resolve))")
    assert await page.evaluate("window.room.state") == "closed"
    assert len(await page.evaluate(SOCKETS)) == 1
    await expect(page.locator("#status")).to_have_text(f"closed: 1008 {reason}")
    await expect(page.locator("#connect")).to_be_enabled()
    await expect(page.locator("#messageText")).to_be_disabled()


# Installed before the page's scripts: the first socket's pings never reach the server,
# as on a connection that died without a close (a laptop lid, a lost network).
SWALLOW_FIRST_PINGS = """
(() => {
  const send = WebSocket.prototype.send;
  let first = null;
  window.__pingsSent = 0;
  WebSocket.prototype.send = function (data) {
    first = first ?? this;
    if (typeof data === "string" && JSON.parse(data).type === "ping") {
      window.__pingsSent += 1;
      if (this === first) return;
    }
    return send.call(this, data);
  };
})();
"""

PONGS = "window.__sockets.at(-1).frames.filter((f) => f.type === 'pong').length"


@pytest.mark.browser
async def test_a_missing_pong_is_a_dead_connection(
    context: BrowserContext, open_page: OpenPage, mint: Mint, item: str
) -> None:
    await context.add_init_script(SWALLOW_FIRST_PINGS)
    await context.add_init_script(RECORD_SOCKETS)
    await context.clock.install()
    page = await open_page(demo_path(item, mint("alice")))
    await connect(page, item, "alice")
    first_status = await page.locator("#status").inner_text()

    # Ping at 20 s; no pong by 30 s: given up and reconnected.
    await page.clock.run_for(19_000)
    assert await page.evaluate("window.__pingsSent") == 0
    await page.clock.run_for(11_500)
    await expect(page.locator("#messages li.system")).to_have_text(
        ["connection closed: 4000 ping_timeout; reconnecting"]
    )
    await page.clock.run_for(1_000)  # past the first backoff step
    await expect(page.locator("#status")).to_contain_text(
        f"connected to item {item} as alice", timeout=WAIT_MS
    )
    await expect(page.locator("#status")).not_to_have_text(first_status)
    assert await page.evaluate("window.__pingsSent") == 1

    # The new connection's pings are answered (in real time: the server's clock is not
    # fake), and it stays.
    for pongs in (1, 2):
        await page.clock.run_for(20_000)
        await wait_for(page, f"{PONGS} === {pongs}")
    await page.clock.run_for(15_000)
    assert await page.evaluate("window.__pingsSent") == 3
    await expect(page.locator("#messages li.system")).to_have_count(1)
    assert await page.evaluate("window.room.state") == "open"
    assert len(await page.evaluate(SOCKETS)) == 2
