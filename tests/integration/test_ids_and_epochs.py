"""PROTOCOL.md v1.1 over the wire: idempotent publishes (WebSocket ``id`` and HTTP
``Idempotency-Key``) and epochs (``welcome.epoch``, resume with ``since`` and
``epoch``), against a real server with real clients."""

from collections.abc import Callable

import httpx

from tests.conftest import Mint, assert_healthy
from tests.support.client import (
    bearer,
    closed_with,
    join,
    open_room,
    recv_json,
    recv_type,
    send_json,
)
from tests.support.server import ServerProcess

Starter = Callable[..., ServerProcess]


async def test_a_repeated_id_answers_its_sender_alone_with_the_original(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    alice, _ = await join(server, item, mint("alice"))
    bob, _ = await join(server, item, mint("bob"))
    async with alice, bob:
        await send_json(alice, {"type": "publish", "data": {"n": 1}, "ref": "a1", "id": "m-1"})
        first = await recv_type(alice, "message")
        assert (first["seq"], first["id"], first["ref"]) == (1, "m-1", "a1")
        seen = await recv_type(bob, "message")
        assert (seen["seq"], seen["id"], "ref" in seen) == (1, "m-1", False)  # id in every copy
        await send_json(alice, {"type": "publish", "data": {"n": 1}, "ref": "a2", "id": "m-1"})
        again = await recv_type(alice, "message")
        assert again == {**first, "ref": "a2", "duplicate": True}
        # Bob got nothing for the repeat: the next message he sees is the next one.
        await send_json(alice, {"type": "publish", "data": "next", "ref": "a3"})
        assert (await recv_type(bob, "message"))["seq"] == 2
        history = httpx.get(
            f"{server.http_url}/items/{item}/messages", headers=bearer(mint("alice")), timeout=5
        ).json()
        assert [(m["seq"], m.get("id")) for m in history["messages"]] == [(1, "m-1"), (2, None)]


async def test_a_malformed_id_is_refused_and_the_connection_goes_on(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    ws, _ = await join(server, item, mint())
    async with ws:
        for bad in ("", "has space", "x" * 65, 7):
            await send_json(ws, {"type": "publish", "data": 1, "ref": "r", "id": bad})
            error = await recv_json(ws)
            assert (error["type"], error["code"], error["ref"]) == ("error", "invalid_frame", "r")
        await send_json(ws, {"type": "publish", "data": 1, "ref": "ok", "id": "fine"})
        assert (await recv_json(ws))["ref"] == "ok"
    await assert_healthy(server)


async def test_http_idempotency_key_publishes_once(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    watcher, _ = await join(server, item, mint("watcher"))
    async with watcher, httpx.AsyncClient(base_url=server.http_url, timeout=5) as http:
        headers = {**bearer(mint("backend")), "Idempotency-Key": "order-42"}
        url = f"/items/{item}/messages"
        first = await http.post(url, json={"data": "paid"}, headers=headers)
        again = await http.post(url, json={"data": "paid"}, headers=headers)
        assert first.status_code == again.status_code == 200, first.text
        assert first.json() == {
            "item_id": item,
            "seq": 1,
            "epoch": first.json()["epoch"],
            "duplicate": False,
            "id": "order-42",
        }
        assert again.json() == {**first.json(), "duplicate": True}
        assert (await recv_type(watcher, "message"))["id"] == "order-42"
        bad = await http.post(url, json={"data": 1}, headers={**headers, "Idempotency-Key": "a b"})
        assert bad.status_code == 422
        await http.post(url, json={"data": "marker"}, headers=bearer(mint("backend")))
        assert (await recv_type(watcher, "message"))["data"] == "marker"  # no second copy


async def test_resume_within_the_epoch_and_across_a_restart(
    start_server: Starter, mint: Mint, item: str
) -> None:
    first = start_server()
    ws, welcome = await join(first, item, mint())
    async with ws:
        for i in range(3):
            await send_json(ws, {"type": "publish", "data": i, "ref": str(i)})
            await recv_type(ws, "message")
    epoch = welcome["epoch"]
    assert isinstance(epoch, str) and epoch
    resumed, again = await join(first, item, mint(), since=1, extra_query={"epoch": epoch})
    async with resumed:
        assert (again["epoch"], again["recovered"], again["seq"]) == (epoch, True, 3)
        assert [(await recv_json(resumed))["seq"] for _ in range(2)] == [2, 3]
    port = first.port
    first.stop()
    # A memory backend starts a new epoch with each process: history is gone, and the
    # client that knew the old one is told so, even where the seqs would line up.
    second = start_server(port=port)
    ws, _ = await join(second, item, mint())
    async with ws:
        for i in range(5):
            await send_json(ws, {"type": "publish", "data": i, "ref": str(i)})
            await recv_type(ws, "message")
    late, welcome = await join(second, item, mint(), since=3, extra_query={"epoch": epoch})
    async with late:
        assert welcome["recovered"] is False and welcome["epoch"] != epoch
        assert [(await recv_json(late))["seq"] for _ in range(5)] == [1, 2, 3, 4, 5]
    history = second.get(f"/items/{item}/messages?since=3&epoch={epoch}")
    assert history.status_code == 401  # the HTTP API wants a token, as always
    answer = httpx.get(
        f"{second.http_url}/items/{item}/messages",
        params={"since": 3, "epoch": epoch},
        headers=bearer(mint()),
        timeout=5,
    ).json()
    assert answer["recovered"] is False and answer["epoch"] == welcome["epoch"]
    assert [m["seq"] for m in answer["messages"]] == [1, 2, 3, 4, 5]


async def test_a_malformed_epoch_is_refused_with_a_close_code(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    ws = await open_room(server, item, mint(), since=1, extra_query={"epoch": "no spaces"})
    assert await closed_with(ws) == (1008, "invalid_request")
    await assert_healthy(server)
