"""The HTTP API as an application backend uses it, against a real server, with
WebSocket members watching the same rooms."""

from collections.abc import Callable

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from tests.conftest import Mint, assert_healthy
from tests.support.client import (
    bearer,
    closed_with,
    drain_until_closed,
    join,
    open_room,
    recv_json,
    recv_type,
    send_json,
)
from tests.support.server import ServerProcess

Starter = Callable[..., ServerProcess]


async def test_a_backend_publishes_into_a_room_a_member_has_open(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    ws, _ = await join(server, item, mint("alice"))
    async with ws, httpx.AsyncClient(base_url=server.http_url) as http:
        await send_json(ws, {"type": "publish", "data": "from the socket", "ref": "w"})
        assert (await recv_json(ws))["seq"] == 1
        response = await http.post(
            f"/items/{item}/messages", json={"data": {"price": 42}}, headers=bearer(mint("backend"))
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body == {"item_id": item, "seq": 2, "epoch": body["epoch"], "duplicate": False}
        frame = await recv_json(ws)
        assert frame["seq"] == 2 and frame["data"] == {"price": 42}
        assert frame["sender"] == {"user": "backend", "client_id": "http"} and "ref" not in frame


async def test_http_errors(server: ServerProcess, mint: Mint, item: str) -> None:
    url = f"/items/{item}/messages"
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        missing = await http.post(url, json={"data": 1})
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith(
            "Bearer"
        )
        bad = await http.post(url, json={"data": 1}, headers=bearer("not.a.token"))
        assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["www-authenticate"]
        basic = await http.post(url, json={"data": 1}, headers={"Authorization": "Basic eA=="})
        assert basic.status_code == 401
        expired = await http.post(url, json={"data": 1}, headers=bearer(mint(ttl_s=-600)))
        assert expired.status_code == 401
        read_only = await http.post(
            url, json={"data": 1}, headers=bearer(mint(scope=["items:read"]))
        )
        assert read_only.status_code == 403
        elsewhere = await http.post(url, json={"data": 1}, headers=bearer(mint(items=["other-*"])))
        assert elsewhere.status_code == 403
        # Valid JSON that JSON cannot carry on: a lone surrogate (once a 500).
        for body in (b"{}", b"not json", b"[1]", b'{"data": "\\ud800"}'):
            response = await http.post(
                url, content=body, headers={**bearer(mint()), "Content-Type": "application/json"}
            )
            assert response.status_code == 422, body
        too_big = await http.post(url, json={"data": "x" * 70_000}, headers=bearer(mint()))
        assert too_big.status_code == 413
        deep: object = 1
        for _ in range(40):
            deep = [deep]
        assert (
            await http.post(url, json={"data": deep}, headers=bearer(mint()))
        ).status_code == 422
        bad_id = await http.post("/items/a$b/messages", json={"data": 1}, headers=bearer(mint()))
        assert bad_id.status_code == 422
        # Nothing above was published.
        history = await http.get(url, headers=bearer(mint()))
        assert history.json()["seq"] == 0


async def test_history(server: ServerProcess, mint: Mint, item: str) -> None:
    async with httpx.AsyncClient(base_url=server.http_url, headers=bearer(mint())) as http:
        for i in range(5):
            await http.post(f"/items/{item}/messages", json={"data": i})
        everything = (await http.get(f"/items/{item}/messages")).json()
        assert everything["seq"] == 5 and everything["recovered"] is True
        assert [m["data"] for m in everything["messages"]] == [0, 1, 2, 3, 4]
        assert everything["messages"][0]["type"] == "message"
        page = (await http.get(f"/items/{item}/messages", params={"since": 2, "limit": 2})).json()
        assert [m["seq"] for m in page["messages"]] == [3, 4]
        assert (await http.get(f"/items/{item}/messages", params={"since": -1})).status_code == 422


async def test_presence_kick_and_close(server: ServerProcess, mint: Mint, item: str) -> None:
    alice, wa = await join(server, item, mint("alice"))
    alice_again, _ = await join(server, item, mint("alice"))
    bob, wb = await join(server, item, mint("bob"))
    admin = bearer(mint("admin", scope=["items:read", "items:admin"]))
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        url = f"/items/{item}/presence"
        whole = (await http.get(url, headers=admin)).json()
        # One entry per user, two tabs counted as connections.
        assert whole == {
            "item_id": item,
            "member_count": 2,
            "members": [{"user": "alice", "connections": 2}, {"user": "bob", "connections": 1}],
            "next": None,
        }
        first = (await http.get(url, params={"limit": 1}, headers=admin)).json()
        assert (first["members"], first["next"]) == ([{"user": "alice", "connections": 2}], "alice")
        rest = (await http.get(url, params={"after": "alice"}, headers=admin)).json()
        assert (rest["member_count"], rest["members"], rest["next"]) == (
            2,
            [{"user": "bob", "connections": 1}],
            None,
        )
        for bad in ({"limit": 0}, {"limit": 1001}, {"after": ""}, {"after": "a" * 1025}):
            refused = await http.get(url, params=bad, headers=admin)
            assert refused.status_code == 422, (bad, refused.text)
        not_admin = await http.post(
            f"/items/{item}/kick", json={"sub": "alice"}, headers=bearer(mint())
        )
        assert not_admin.status_code == 403
        kicked = await http.post(f"/items/{item}/kick", json={"sub": "alice"}, headers=admin)
        assert kicked.status_code == 202
        for ws in (alice, alice_again):
            _, code_reason = await drain(ws)
            assert code_reason == (1008, "forbidden")
        left = await recv_type(bob, "presence")  # alice is one member: one leave
        assert (left["event"], left["user"], left["client_id"]) == (
            "leave",
            "alice",
            wa["client_id"],
        )
        again = await http.post(f"/items/{item}/kick", json={"sub": "alice"}, headers=admin)
        assert again.status_code == 202  # idempotent
        closed = await http.post(f"/items/{item}/close", headers=admin)
        assert closed.status_code == 202
        _, code_reason = await drain(bob)
        assert code_reason == (1008, "item_closed")
        assert (await http.post(f"/items/{item}/close", headers=admin)).status_code == 202
        assert (await http.get(f"/items/{item}/presence", headers=admin)).json()["members"] == []
    assert wa["user"] == "alice" and wb["user"] == "bob"


async def drain(ws: ClientConnection) -> tuple[list[object], tuple[int, str]]:
    """The frames still in flight, then the close code and reason."""
    frames, code, reason = await drain_until_closed(ws)
    return list(frames), (code, reason)


async def test_kick_and_presence_across_processes(
    start_redis_server: Starter, mint: Mint, item: str
) -> None:
    one, two = start_redis_server(), start_redis_server()
    target, _ = await join(two, item, mint("target"))
    watcher, _ = await join(one, item, mint("watcher"))
    admin = bearer(mint("admin", scope=["items:read", "items:admin"]))
    async with httpx.AsyncClient(base_url=one.http_url) as http:
        members = (await http.get(f"/items/{item}/presence", headers=admin)).json()["members"]
        assert sorted(m["user"] for m in members) == ["target", "watcher"]
        assert (
            await http.post(f"/items/{item}/kick", json={"sub": "target"}, headers=admin)
        ).status_code == 202
    _, code_reason = await drain(target)
    assert code_reason == (1008, "forbidden")
    async with watcher:
        assert (await recv_type(watcher, "presence"))["event"] == "leave"


async def test_metrics_count_what_happened(server: ServerProcess, mint: Mint, item: str) -> None:
    ws, _ = await join(server, item, mint())
    async with ws, httpx.AsyncClient(base_url=server.http_url) as http:
        await http.post(f"/items/{item}/messages", json={"data": 1}, headers=bearer(mint()))
        await recv_type(ws, "message")
        bad = await open_room(server, item, "bad.token.here")
        await closed_with(bad)
        text = (await http.get("/metrics")).text
    assert 'itemrooms_messages_published_total{via="http"}' in text
    assert 'itemrooms_rejections_total{reason="invalid_token"}' in text
    assert "itemrooms_connections " in text and "itemrooms_joins_total" in text
    assert (
        "itemrooms_messages_delivered_total" in text and "itemrooms_fanout_seconds_bucket" in text
    )


async def test_the_interactive_docs_link_to_the_websocket_protocol(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        openapi = (await http.get("/openapi.json")).json()
        assert "/docs/websocket" in openapi["info"]["description"]
        page = await http.get("/docs/websocket")
        assert page.status_code == 200 and "/items/{item_id}/ws" in page.text
        assert "token_expired" in page.text and "welcome" in page.text
        spec = await http.get("/asyncapi.yaml")
        assert spec.status_code == 200 and spec.text.startswith("asyncapi: 3.0.0")


async def test_integers_beyond_64_bits_arrive_as_floats_on_both_paths(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    """One rule for HTTP and WebSocket publishes (SECURITY.md): as in JavaScript. The
    HTTP path answered 500 for these once (found by schemathesis)."""
    ws, _ = await join(server, item, mint())
    async with ws, httpx.AsyncClient(base_url=server.http_url, timeout=5) as http:
        await send_json(ws, {"type": "publish", "data": [2**64, -(2**63) - 1, 2**64 - 1]})
        via_socket = (await recv_type(ws, "message"))["data"]
        response = await http.post(
            f"/items/{item}/messages",
            content=b'{"data": [18446744073709551616, -9223372036854775809, 18446744073709551615]}',
            headers={**bearer(mint()), "Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text
        via_http = (await recv_type(ws, "message"))["data"]
        assert via_http == via_socket == [2.0**64, -(2.0**63), 2**64 - 1]
        assert isinstance(via_http[0], float) and isinstance(via_http[2], int)


@pytest.mark.parametrize(
    "raw", ["NaN", "Infinity", "-Infinity", "1e400", '[1, {"a": -1e999}]', '"\\ud800"']
)
async def test_what_the_websocket_path_refuses_http_refuses_with_422(
    server: ServerProcess, mint: Mint, item: str, raw: str
) -> None:
    """NaN, Infinity and 1e400 (which Python's decoder makes infinite) are not JSON: the
    WebSocket path answers invalid_json, HTTP 422 in FastAPI's shape (members used to
    receive null). A lone surrogate likewise (HTTP used to answer 500)."""
    logged = len(server.lines)
    ws, _ = await join(server, item, mint())
    async with ws, httpx.AsyncClient(base_url=server.http_url, timeout=5) as http:
        await ws.send(f'{{"type": "publish", "data": {raw}, "ref": "r"}}')
        assert (await recv_json(ws))["code"] == "invalid_json"
        response = await http.post(
            f"/items/{item}/messages",
            content=f'{{"data": {raw}}}'.encode(),
            headers={**bearer(mint()), "Content-Type": "application/json"},
        )
        assert response.status_code == 422, response.text
        (error,) = response.json()["detail"]
        assert error["loc"] == ["body", "data"], error
        assert "not JSON" in error["msg"] or "surrogates not allowed" in error["msg"], error
        await send_json(ws, {"type": "publish", "data": "after", "ref": "a"})
        after = await recv_json(ws)  # the next frame: nothing was published meanwhile
        assert (after["type"], after["data"], after["seq"]) == ("message", "after", 1)
    assert not [line for line in server.lines[logged:] if "ERROR" in line]


async def test_http_publishes_are_limited_per_user(
    start_server: Callable[..., ServerProcess], mint: Mint, item: str
) -> None:
    """ITEMROOMS_HTTP_RATE_LIMIT per sub: over it, 429 with Retry-After and nothing
    published; another user is not held back by the first one's flood."""
    server = start_server(http_rate_limit=5)
    ws, _ = await join(server, item, mint("member"))
    async with ws, httpx.AsyncClient(base_url=server.http_url, timeout=5) as http:
        answers = [
            await http.post(
                f"/items/{item}/messages", json={"data": i}, headers=bearer(mint("flooder"))
            )
            for i in range(40)
        ]
        statuses = [a.status_code for a in answers]
        accepted = [i for i, status in enumerate(statuses) if status == 200]
        assert 5 <= len(accepted) <= 10 and set(statuses) == {200, 429}, statuses
        refused = answers[statuses.index(429)]
        assert refused.headers["retry-after"] == "1"
        assert "over 5 HTTP publishes a second" in refused.json()["detail"]
        other = await http.post(
            f"/items/{item}/messages", json={"data": "other"}, headers=bearer(mint("other"))
        )
        assert other.status_code == 200
        received = [(await recv_type(ws, "message"))["data"] for _ in range(len(accepted) + 1)]
        assert received == [*accepted, "other"]  # exactly the accepted ones, in order
    await assert_healthy(server)
