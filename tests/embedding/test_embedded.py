"""itemrooms inside a team's own FastAPI app (tests/embedding/host_app.py), served by
uvicorn as the README shows: the host's routes and lifespan work, and so do the rooms,
their rejections (close codes, not HTTP 403s), the HTTP API and the metrics, under the
host's prefix. And a mounted itemrooms says it is not running instead of answering 500."""

import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import Mint, server_env
from tests.support.client import bearer, closed_with, join, open_room, recv_type, send_json
from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "/rt"
OUR_PROTOCOL = "itemrooms.api.ws_protocol:RoomsWebSocketProtocol"


def uvicorn_command(target: str, ws: str, max_size: int = 65536) -> list[str]:
    """What README "Embedding" tells a host to run (the --ws line keeps the fast path)."""
    return [
        *(sys.executable, "-m", "uvicorn", target),
        *("--host", "127.0.0.1", "--port", "{port}"),
        *("--ws", ws, "--ws-per-message-deflate", "false", "--ws-max-size", str(max_size)),
        *("--http", "itemrooms.api.http_protocol:RoomsHttpToolsProtocol"),
    ]


@pytest.fixture
def start_host(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(
        target: str = "tests.embedding.host_app:app", ws: str = OUR_PROTOCOL
    ) -> ServerProcess:
        env = {**server_env(), "PYTHONPATH": str(ROOT)}
        proc = ServerProcess(
            env, cwd=tmp_path, command=uvicorn_command(target, ws), prefix=PREFIX
        ).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


async def chat(host: ServerProcess, item: str, mint: Mint) -> None:
    """Two members: presence, a publish each way, the sender's ref, a resume with since."""
    alice, welcome = await join(host, item, mint("alice"))
    async with alice:
        assert welcome["item_id"] == item
        bob, welcome = await join(host, item, mint("bob"))
        async with bob:
            assert [m["user"] for m in welcome["members"]] == ["alice"]
            joined = await recv_type(alice, "presence")
            assert (joined["event"], joined["user"]) == ("join", "bob")
            await send_json(alice, {"type": "publish", "data": {"text": "hi"}, "ref": "r1"})
            mine = await recv_type(alice, "message")
            theirs = await recv_type(bob, "message")
            assert mine["ref"] == "r1" and "ref" not in theirs
            assert theirs["data"] == {"text": "hi"} and theirs["seq"] == mine["seq"] == 1
        again, resumed = await join(host, item, mint("bob"), since=0)
        async with again:
            replayed = await recv_type(again, "message")
            assert replayed["seq"] == 1 and resumed["recovered"] is True


@pytest.mark.parametrize("ws", [OUR_PROTOCOL, "websockets-sansio"], ids=["fast-path", "stock"])
async def test_rooms_http_api_and_metrics_inside_the_host_app(
    start_host: Callable[..., ServerProcess], mint: Mint, item: str, ws: str
) -> None:
    host = start_host(ws=ws)
    async with httpx.AsyncClient(base_url=host.http_url, timeout=5) as http:
        assert (await http.get("/hello")).json() == {"greeting": "hello from the host"}
        assert (await http.get(f"{PREFIX}/readyz")).json() == {"status": "ready"}
        await chat(host, item, mint)
        member, _ = await join(host, item, mint("carol"))
        async with member:
            answer = await http.post(
                f"{PREFIX}/items/{item}/messages",
                json={"data": "from the backend"},
                headers=bearer(mint("svc", scope=["items:write"])),
            )
            assert answer.status_code == 200, answer.text
            assert (await recv_type(member, "message"))["data"] == "from the backend"
        history = await http.get(
            f"{PREFIX}/items/{item}/messages", headers=bearer(mint(scope=["items:read"]))
        )
        assert [m["seq"] for m in history.json()["messages"]] == [1, 2]
        metrics = (await http.get(f"{PREFIX}/metrics")).text
        assert "itemrooms_joins_total 4.0" in metrics
        # The host's own OpenAPI document lists the HTTP API under its prefix.
        paths = (await http.get("/openapi.json")).json()["paths"]
        assert {"/hello", f"{PREFIX}/items/{{item_id}}/messages", f"{PREFIX}/readyz"} <= set(paths)


@pytest.mark.parametrize("ws", [OUR_PROTOCOL, "websockets-sansio"], ids=["fast-path", "stock"])
async def test_rejections_are_close_codes_whatever_the_host_handlers(
    start_host: Callable[..., ServerProcess], mint: Mint, item: str, ws: str
) -> None:
    host = start_host(ws=ws)
    cases = [
        (item, "not-a-jwt", {}, "invalid_token"),
        (item, mint(items=["elsewhere"]), {}, "forbidden"),
        ("a$b", mint(), {}, "invalid_item_id"),
        (item, mint(), {"since": "-1"}, "invalid_since"),
        (item, mint(), {"epoch": "no spaces"}, "invalid_request"),
    ]
    for room, token, query, reason in cases:
        client = await open_room(host, room, token, extra_query=query)
        assert await closed_with(client) == (1008, reason)
    client = await open_room(host, item, None)
    assert await closed_with(client) == (1008, "missing_token")
    metrics = httpx.get(f"{host.http_url}{PREFIX}/metrics", timeout=5).text
    assert 'itemrooms_rejections_total{reason="invalid_token"} 1.0' in metrics
    await chat(host, item, mint)  # and the rooms are healthy afterwards


async def test_the_fast_path_protocol_keeps_its_close_reasons(
    start_host: Callable[..., ServerProcess], mint: Mint, item: str
) -> None:
    """What the --ws option keeps beyond speed: PROTOCOL.md's 1009 and 1001 reasons."""
    host = start_host()
    ws, _ = await join(host, item, mint())
    async with ws:
        await ws.send("x" * 70_000)
        assert await closed_with(ws) == (1009, "message_too_big")
    ws, _ = await join(host, item, mint())
    assert host.process is not None
    host.process.send_signal(signal.SIGINT)
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "going_away")
    assert host.process.wait(15) == 0  # one SIGINT: a second one would skip the lifespan
    assert host.wait_for_output("Application shutdown complete")


async def test_a_mounted_itemrooms_says_it_is_not_running(
    start_host: Callable[..., ServerProcess], mint: Mint, item: str
) -> None:
    host = start_host("tests.embedding.mounted_app:app")
    answer = httpx.get(f"{host.http_url}{PREFIX}/readyz", timeout=5)
    assert answer.status_code == 503
    assert "itemrooms is not running" in answer.json()["detail"]
    assert "Itemrooms.lifespan" in answer.json()["detail"]
    ws = await open_room(host, item, mint())
    assert await closed_with(ws) == (1011, "internal_error")
    assert host.wait_for_output("itemrooms is not running")
    assert "Traceback" not in host.output
