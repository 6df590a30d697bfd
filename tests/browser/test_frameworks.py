"""The React hook and the Vue composable (clients/js/react.js, vue.js) in Chromium: the
README's examples (clients/js/examples/) built by Vite against the packed tarball, served
from an origin of their own, chatting with a real server and a real Python member."""

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from playwright.async_api import expect

from tests.browser.conftest import OpenPage
from tests.conftest import Mint, server_env
from tests.js.test_package import install, pack, run
from tests.support.client import bearer, join, recv_type
from tests.support.server import ServerProcess, free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "clients" / "js" / "examples"
APPS = ROOT / "tests" / "js" / "apps"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Not a line per file: the page's URL carries a token."""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The examples built by Vite, served on a port of their own: the page's origin."""
    work = tmp_path_factory.mktemp("frameworks")
    tarball = pack(work)
    app = work / "app"
    shutil.copytree(APPS, app)
    for name in ("react", "vue"):
        shutil.copytree(EXAMPLES / name, app / name)
    install(app, tarball)
    run(["npx", "--no-install", "vite", "build"], app)
    handler = functools.partial(QuietHandler, directory=str(app / "dist"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def rooms(built: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that takes the examples' origin."""
    env = server_env(allowed_origins=built)
    server = ServerProcess(env, cwd=tmp_path_factory.mktemp("rooms")).start()
    yield server
    server.stop()


@pytest.mark.parametrize("framework", ["react", "vue"])
async def test_the_example_chats_through_the_framework_binding(
    built: str, rooms: ServerProcess, open_page: OpenPage, mint: Mint, item: str, framework: str
) -> None:
    member, _ = await join(rooms, item, mint("python"))
    async with member:
        query = urlencode({"url": rooms.ws_url(item), "token": mint(f"{framework}-user")})
        page = await open_page(f"{built}/{framework}.html?{query}")
        await expect(page.locator("#status")).to_have_text("open")
        await expect(page.locator("#members")).to_have_text("1 others here")
        joined = await recv_type(member, "presence")  # presence comes in batches
        assert (joined["event"], joined["user"]) == ("join", f"{framework}-user")
        # The page publishes; the Python member hears it.
        await page.locator("#say").click()
        heard = await recv_type(member, "message")
        assert (heard["data"], heard["sender"]["user"]) == (
            f"hello from {framework}",
            f"{framework}-user",
        )
        # A backend publishes over HTTP; the page shows it after its own.
        answer = httpx.post(
            f"{rooms.http_url}/items/{item}/messages",
            json={"data": "from the backend"},
            headers=bearer(mint("backend", scope=["items:write"])),
            timeout=5,
        )
        assert answer.status_code == 200, answer.text
        await expect(page.locator("#messages li")).to_have_text(
            [f"{framework}-user: hello from {framework}", "backend: from the backend"]
        )
        await page.close()
        left = await recv_type(member, "presence")
        assert (left["event"], left["user"]) == ("leave", f"{framework}-user")
