"""The README's SPA snippet, pasted into a blank page on another origin, chats with
a running server (whose ITEMROOMS_ALLOWED_ORIGINS lists that origin)."""

import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser.conftest import OpenPage
from tests.conftest import Mint
from tests.support.server import ServerProcess, free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

README = Path(__file__).resolve().parents[2] / "README.md"


def snippet() -> str:
    text = README.read_text()
    block = re.search(
        r"<!-- spa-snippet -->\s*```html\n(.*?)```\s*<!-- /spa-snippet -->", text, re.S
    )
    assert block, "the README lost its SPA snippet markers"
    return block.group(1)


@pytest.fixture
def blank_page_host() -> Iterator[tuple[int, dict[str, str]]]:
    """A static host on another origin, serving whatever page the test puts in ``pages``."""
    pages: dict[str, str] = {}
    port = free_port()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = pages.get(self.path, "")
            body = f"<!doctype html><meta charset=utf-8><title>blank</title>{page}".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield port, pages
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.browser
async def test_the_readme_snippet_chats_from_a_blank_page(
    open_page: OpenPage,
    start_server: Callable[..., ServerProcess],
    blank_page_host: tuple[int, dict[str, str]],
    mint: Mint,
) -> None:
    host_port, pages = blank_page_host
    origin = f"http://127.0.0.1:{host_port}"
    server = start_server(allowed_origins=origin)
    code = snippet().replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
    pages["/"] = code.replace("PASTE-A-TOKEN-HERE", mint("alice"))
    page = await open_page(origin + "/")
    await expect(page.locator("#log")).to_contain_text('alice: {"text":"hello from a blank page"}')
    await expect(page.locator("#log")).to_contain_text("status: open")
