"""The connection gate, seen from a real client: every credential place and every
rejection arrives as close code 1008 with PROTOCOL.md's reason (not a bare 403)."""

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Mint, assert_healthy
from tests.support.client import Via, closed_with, join, open_room
from tests.support.server import ServerProcess

Starter = Callable[..., ServerProcess]
PLACES: list[Via] = ["header", "subprotocol", "query", "cookie"]


async def rejected(
    server: ServerProcess, item_id: str, token: str | None, **kw: object
) -> tuple[int, str]:
    ws = await open_room(server, item_id, token, **kw)  # type: ignore[arg-type]
    code_reason = await closed_with(ws)
    await assert_healthy(server)
    return code_reason


@pytest.mark.parametrize("via", PLACES)
async def test_each_credential_place_joins(
    server: ServerProcess, mint: Mint, item: str, via: Via
) -> None:
    ws, welcome = await join(server, item, mint("carol"), via=via)
    async with ws:
        assert welcome["user"] == "carol"
        assert welcome["item_id"] == item


async def test_subprotocol_answer_is_ours_never_the_token(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    ws, _ = await join(server, item, mint(), via="subprotocol")
    async with ws:
        assert ws.subprotocol == "itemrooms.v1"


async def test_no_credential_is_missing_token(server: ServerProcess, item: str) -> None:
    assert await rejected(server, item, None) == (1008, "missing_token")


@pytest.mark.parametrize("via", PLACES)
async def test_bad_token_in_each_place_is_invalid_token(
    server: ServerProcess, item: str, via: Via
) -> None:
    assert await rejected(server, item, "not.a.jwt", via=via) == (1008, "invalid_token")


@pytest.mark.parametrize("via", PLACES)
async def test_expired_token_in_each_place(
    server: ServerProcess, mint: Mint, item: str, via: Via
) -> None:
    # Expired by more than the 30 s leeway.
    token = mint(extra={"exp": int(time.time()) - 120, "iat": int(time.time()) - 600})
    assert await rejected(server, item, token, via=via) == (1008, "token_expired")


async def test_wrong_signature_is_invalid_token(server: ServerProcess, item: str) -> None:
    from itemrooms.auth.tokens import mint_token

    token = mint_token("another-secret-of-enough-length-0123456789", "mallory")
    assert await rejected(server, item, token) == (1008, "invalid_token")


async def test_token_without_exp_is_invalid(server: ServerProcess, mint: Mint, item: str) -> None:
    from jose import jwt

    from tests.conftest import SECRET

    token = jwt.encode({"sub": "alice", "scope": "items:read"}, SECRET, algorithm="HS256")
    assert await rejected(server, item, token) == (1008, "invalid_token")


async def test_not_yet_valid_token_is_invalid(server: ServerProcess, mint: Mint, item: str) -> None:
    token = mint(extra={"nbf": int(time.time()) + 600})
    assert await rejected(server, item, token) == (1008, "invalid_token")


async def test_authorization_without_bearer_is_invalid(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    ws = await open_room(
        server, item, None, additional_headers={"Authorization": f"Basic {mint()}"}
    )
    assert await closed_with(ws) == (1008, "invalid_token")


async def test_empty_query_token_is_invalid_not_missing(server: ServerProcess, item: str) -> None:
    ws = await open_room(server, item, None, extra_query={"token": ""})
    assert await closed_with(ws) == (1008, "invalid_token")


async def test_token_over_the_length_cap_is_invalid(
    start_server: Starter, mint: Mint, item: str
) -> None:
    server = start_server(max_token_bytes=1024)
    token = mint(extra={"pad": "x" * 1000})
    assert len(token) > 1024
    assert await rejected(server, item, token) == (1008, "invalid_token")
    ws, _ = await join(server, item, mint())  # a token under the cap still joins
    await ws.close()


async def test_present_but_bad_header_is_not_skipped_for_a_good_query_token(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    ws = await open_room(
        server,
        item,
        None,
        additional_headers={"Authorization": "Bearer forged"},
        extra_query={"token": mint()},
    )
    assert await closed_with(ws) == (1008, "invalid_token")


async def test_bad_subprotocol_token_is_not_skipped_for_a_good_cookie(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    ws = await open_room(
        server,
        item,
        None,
        subprotocols=["itemrooms.v1", "bearer.forged"],
        additional_headers={"Cookie": f"session={mint()}"},
    )
    assert await closed_with(ws) == (1008, "invalid_token")


PAIRS = [
    ("header", "subprotocol"),
    ("subprotocol", "query"),
    ("query", "cookie"),
    ("header", "cookie"),
]


def credentials(server: ServerProcess, place: str, token: str) -> dict[str, Any]:
    """Connection options that put ``token`` in ``place``."""
    if place == "header":
        return {"additional_headers": {"Authorization": f"Bearer {token}"}}
    if place == "subprotocol":
        return {"subprotocols": ["itemrooms.v1", f"bearer.{token}"]}
    if place == "query":
        return {"extra_query": {"token": token}}
    return {"additional_headers": {"Cookie": f"session={token}"}, "origin": server.http_url}


def both(server: ServerProcess, first: tuple[str, str], second: tuple[str, str]) -> dict[str, Any]:
    a, b = credentials(server, *first), credentials(server, *second)
    headers = {**a.get("additional_headers", {}), **b.get("additional_headers", {})}
    return {**a, **b, "additional_headers": headers}


@pytest.mark.parametrize(("first", "second"), PAIRS)
async def test_first_place_wins_when_both_are_valid(
    server: ServerProcess, mint: Mint, item: str, first: str, second: str
) -> None:
    options = both(server, (first, mint(first)), (second, mint(second)))
    ws, welcome = await join(server, item, None, **options)
    async with ws:
        assert welcome["user"] == first


@pytest.mark.parametrize(("first", "second"), PAIRS)
async def test_an_empty_later_credential_does_not_override_a_valid_earlier_one(
    server: ServerProcess, mint: Mint, item: str, first: str, second: str
) -> None:
    """Say a logout cleared the cookie (``session=``) of a page that uses the subprotocol."""
    options = both(server, (first, mint(first)), (second, ""))
    ws, welcome = await join(server, item, None, **options)
    async with ws:
        assert welcome["user"] == first


async def test_token_without_read_scope_is_forbidden(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    assert await rejected(server, item, mint(scope=["items:write"])) == (1008, "forbidden")


async def test_item_outside_items_claim_is_forbidden(server: ServerProcess, mint: Mint) -> None:
    token = mint(items=["42", "sku-*"])
    assert await rejected(server, "43", token) == (1008, "forbidden")
    assert await rejected(server, "SKU-1", token) == (1008, "forbidden")
    for allowed in ("42", "sku-1", "sku-red:large"):
        ws, welcome = await join(server, allowed, token)
        async with ws:
            assert welcome["item_id"] == allowed


@pytest.mark.parametrize(
    "bad_id", ["a" * 129, "a$b", "a%20b", "%C3%A9t%C3%A9", "", "a/b", "a%2Fb", "a/b/c"]
)
async def test_invalid_item_id(server: ServerProcess, mint: Mint, bad_id: str) -> None:
    assert await rejected(server, bad_id, mint()) == (1008, "invalid_item_id")


async def test_longest_valid_item_id_joins(server: ServerProcess, mint: Mint) -> None:
    item_id = "A-z_0.9:" * 16
    ws, welcome = await join(server, item_id, mint())
    async with ws:
        assert welcome["item_id"] == item_id


@pytest.mark.parametrize(
    "since", ["abc", "-1", "1.5", "", "+1", "\u0661", str(2**62 + 1), str(2**64 - 1)]
)
async def test_invalid_since(server: ServerProcess, mint: Mint, item: str, since: str) -> None:
    ws = await open_room(server, item, mint(), extra_query={"since": since})
    assert await closed_with(ws) == (1008, "invalid_since")
    await assert_healthy(server)


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_since_at_its_bound_joins_on_every_backend(
    start_server: Callable[..., ServerProcess],
    redis_prefix: str,
    mint: Mint,
    item: str,
    backend: str,
) -> None:
    """2^62 is the largest ``since``: a backend never sees one it cannot compare."""
    server = start_server(backend=backend, redis_prefix=redis_prefix)
    ws, welcome = await join(server, item, mint(), since=2**62)
    async with ws:
        # Ahead of anything the room holds: nothing to replay, and not a recovery.
        assert welcome["seq"] == 0 and welcome["recovered"] is False
    assert "itemrooms_backend_errors_total 0.0" in server.get("/metrics").text
