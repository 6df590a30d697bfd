"""Cross-Site WebSocket Hijacking: the Origin allow-list, and the cookie that only
counts with an allowed Origin, as a real client sees them."""

from collections.abc import Callable

import pytest

from tests.conftest import Mint, assert_healthy
from tests.support.client import closed_with, join, open_room
from tests.support.server import ServerProcess

Starter = Callable[..., ServerProcess]


async def refused(server: ServerProcess, item: str, token: str, **kw: object) -> tuple[int, str]:
    ws = await open_room(server, item, token, **kw)  # type: ignore[arg-type]
    result = await closed_with(ws)
    await assert_healthy(server)
    return result


def lookalikes(server: ServerProcess) -> list[str]:
    port = server.port
    return [
        "null",
        "https://evil.example",
        f"http://127.0.0.1.evil.example:{port}",
        f"http://evil.example/127.0.0.1:{port}",
        f"https://127.0.0.1:{port}",  # another scheme
        f"http://127.0.0.1:{port + 1}",  # another port
        "http://127.0.0.1",  # no port: port 80
        f"http://localhost:{port}",  # another host name for the same machine
    ]


async def test_own_origin_with_the_cookie_joins(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    ws, welcome = await join(
        server, item, mint("cookie-user"), via="cookie", origin=server.http_url
    )
    async with ws:
        assert welcome["user"] == "cookie-user"


async def test_cookie_without_origin_is_refused(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    ws = await open_room(server, item, None, additional_headers={"Cookie": f"session={mint()}"})
    assert await closed_with(ws) == (1008, "origin_not_allowed")
    await assert_healthy(server)


@pytest.mark.parametrize("index", range(8))
@pytest.mark.parametrize("via", ["cookie", "header", "query", "subprotocol"])
async def test_foreign_origins_are_refused_whatever_the_credential(
    server: ServerProcess, mint: Mint, item: str, index: int, via: str
) -> None:
    origin = lookalikes(server)[index]
    assert await refused(server, item, mint(), via=via, origin=origin) == (
        1008,
        "origin_not_allowed",
    )


async def test_tokens_outside_the_cookie_need_no_origin(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    for via in ("header", "subprotocol", "query"):
        ws, welcome = await join(server, item, mint(via), via=via)  # type: ignore[arg-type]
        async with ws:
            assert welcome["user"] == via


async def test_allowed_origins_list(start_server: Starter, mint: Mint, item: str) -> None:
    server = start_server(allowed_origins="https://app.example, https://admin.example/")
    for origin in ("https://app.example", "https://ADMIN.example"):
        ws, _ = await join(server, item, mint(), via="cookie", origin=origin)
        await ws.close()
    # With a list, the server's own origin is just another origin.
    assert await refused(server, item, mint(), via="cookie", origin=server.http_url) == (
        1008,
        "origin_not_allowed",
    )
    assert await refused(server, item, mint(), origin="https://app.example.evil") == (
        1008,
        "origin_not_allowed",
    )
