"""Real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright's async API.

One browser per test module, a fresh context per test. Every page opened through
``open_page`` records console errors and uncaught exceptions; a test that leaves any
behind fails at teardown, except those matching one of the test's
``@pytest.mark.expected_console_errors(r"regex", ...)``. When a test fails, a
screenshot of every page still open is saved under ``test-artifacts/`` at the
repository root.

Test modules here must run on the module's event loop, the one the browser lives on:

    pytestmark = pytest.mark.asyncio(loop_scope="module")
"""

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Error,
    Page,
    async_playwright,
)

from tests.support.server import ServerProcess

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Bound on every Playwright action (click, fill, goto), in milliseconds; expectations
# use Playwright's 5 s default unless a test passes its own timeout.
TIMEOUT_MS = 10_000

# Installed before a page's own scripts: every WebSocket the page opens, the
# subprotocols it asked for, and the text frames it received.
RECORD_SOCKETS = """
(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.WebSocket = class extends Native {
    constructor(url, protocols) {
      super(url, protocols);
      const asked = protocols === undefined ? null : [].concat(protocols);
      const record = { url: String(url), protocols: asked, frames: [], socket: this };
      this.addEventListener("message", (e) => {
        if (typeof e.data === "string") record.frames.push(JSON.parse(e.data));
      });
      window.__sockets.push(record);
    }
  };
})();
"""

OpenPage = Callable[[str], Awaitable[Page]]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "expected_console_errors(*patterns): page console errors matching any of these "
        "regular expressions do not fail the test (e.g. refused reconnection attempts)",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item (``rep_setup``, ``rep_call``) for the fixtures."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _failed(node: pytest.Item) -> bool:
    return any(
        getattr(node, f"rep_{when}", None) is not None and getattr(node, f"rep_{when}").failed
        for when in ("setup", "call")
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not (CHROMIUM.is_file() and CHROMIUM.stat().st_mode & 0o111):
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's Chromium. "
            "Run `make test` (its `browser` target installs it), or "
            "`apt-get install chromium`.",
            pytrace=False,
        )
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture(loop_scope="module")
async def context(
    browser: Browser, request: pytest.FixtureRequest
) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context()
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        yield ctx
    finally:
        if _failed(request.node):
            await screenshot_all(ctx, request.node.name)
        await ctx.close()


async def screenshot_all(ctx: BrowserContext, test_name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
    for n, page in enumerate(ctx.pages):
        if page.is_closed():
            continue
        try:
            await page.screenshot(
                path=str(ARTIFACTS / f"{stem}-page{n}.png"), full_page=True, timeout=5_000
            )
        except Error as exc:  # a broken page must not hide the test's own failure
            print(f"screenshot of page {n} failed: {exc}")


@pytest_asyncio.fixture(loop_scope="module")
async def open_page(
    context: BrowserContext, server: ServerProcess, request: pytest.FixtureRequest
) -> AsyncIterator[OpenPage]:
    """``await open_page("/#item=…")``: a new page of the test's context, at that path of
    the session's server (or at a full URL, for another server)."""
    errors: list[str] = []
    expected = [
        re.compile(pattern)
        for marker in request.node.iter_markers("expected_console_errors")
        for pattern in marker.args
    ]

    def on_console(msg: ConsoleMessage) -> None:
        url = msg.location.get("url", "")
        if msg.type == "error" and not any(p.search(msg.text) for p in expected):
            errors.append(f"console error: {msg.text} ({url})")

    def on_pageerror(exc: Error) -> None:
        errors.append(f"uncaught exception: {exc}")

    async def open_(path: str) -> Page:
        page = await context.new_page()
        page.on("console", on_console)
        page.on("pageerror", on_pageerror)
        url = path if path.startswith("http") else server.http_url + path
        response = await page.goto(url, wait_until="load")
        assert response is not None and response.ok, f"GET {path}: {response and response.status}"
        return page

    yield open_
    if not errors:
        return
    report = "the page logged errors:\n" + "\n".join(errors)
    if _failed(request.node):
        print(report)  # shown with the test's failure; the context fixture takes the screenshots
        return
    await screenshot_all(context, request.node.name)
    pytest.fail(report, pytrace=False)
