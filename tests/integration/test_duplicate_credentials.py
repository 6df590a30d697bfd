"""A place that holds two credentials is ambiguous: which one a parser keeps differs
(Starlette keeps the last query value and the first header), so a forged one could ride
beside a good one. Every such handshake is refused with 1008 ``invalid_token``, and the
HTTP API refuses two ``Authorization`` headers with 401 ``invalid_request``."""

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.conftest import Mint, assert_healthy
from tests.support.client import TIMEOUT, closed_with
from tests.support.server import ServerProcess

FORGED = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJldmUifQ.forged"


@pytest.mark.parametrize(
    "place", ["query", "query-same-twice", "cookie", "two-cookie-headers", "header", "subprotocol"]
)
async def test_two_credentials_in_one_place_are_refused(
    server: ServerProcess, mint: Mint, item: str, place: str
) -> None:
    good = mint()
    url = server.ws_url(item)
    headers: list[tuple[str, str]] = []
    subprotocols = None
    if place == "query":
        url += f"?token={FORGED}&token={good}"
    elif place == "query-same-twice":
        url += f"?token={good}&token={good}"
    elif place == "cookie":
        headers.append(("Cookie", f"session={FORGED}; session={good}"))
    elif place == "two-cookie-headers":
        headers += [("Cookie", f"session={FORGED}"), ("Cookie", f"session={good}")]
    elif place == "header":
        headers += [("Authorization", f"Bearer {good}"), ("Authorization", f"Bearer {FORGED}")]
    else:
        subprotocols = ["itemrooms.v1", f"bearer.{good}", f"bearer.{FORGED}"]
    origin = server.http_url if "cookie" in place else None
    ws = await connect(
        url,
        additional_headers=headers,
        subprotocols=subprotocols,
        origin=origin,
        open_timeout=TIMEOUT,
    )
    assert await closed_with(ws) == (1008, "invalid_token")
    await assert_healthy(server)


async def test_one_cookie_among_others_still_joins(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    headers = [("Cookie", f"theme=dark; session={mint()}; lang=fr")]
    async with connect(
        server.ws_url(item),
        additional_headers=headers,
        origin=server.http_url,
    ) as ws:
        assert '"welcome"' in str(await ws.recv())


def test_two_authorization_headers_on_the_http_api_are_refused(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    good = f"Bearer {mint(scope=['items:read'])}"
    answer = httpx.get(
        f"{server.http_url}/items/{item}/presence",
        headers=[("Authorization", good), ("Authorization", f"Bearer {FORGED}")],
        timeout=5,
    )
    assert answer.status_code == 401
    assert answer.json() == {"detail": "more than one Authorization header"}
    assert 'error="invalid_request"' in answer.headers["www-authenticate"]
    alone = httpx.get(
        f"{server.http_url}/items/{item}/presence", headers={"Authorization": good}, timeout=5
    )
    assert alone.status_code == 200
