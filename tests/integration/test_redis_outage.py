"""Redis trouble, with a private redis-server that the test stops and restarts:
a clear error at start, refusals and error frames while it is away, and recovery
by itself when it is back, with no seq handed out twice."""

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Mint
from tests.support.client import closed_with, join, open_room, recv_json, recv_type, send_json
from tests.support.redis_server import PrivateRedis
from tests.support.server import ServerProcess

Starter = Callable[..., ServerProcess]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    instance = PrivateRedis(tmp_path).start()
    yield instance
    instance.stop()


def wait_ready(server: ServerProcess, ready: bool, timeout: float = 15.0) -> None:
    """Poll /readyz, bounded, until it says ``ready`` (it changes on its own)."""
    deadline = time.monotonic() + timeout
    while (server.get("/readyz").status_code == 200) != ready:
        assert time.monotonic() < deadline, f"/readyz never became ready={ready}"
        time.sleep(0.1)


def test_unreachable_redis_at_start_is_a_one_line_error(start_server: Starter) -> None:
    with pytest.raises(RuntimeError, match="cannot reach Redis at redis://127.0.0.1:1/0"):
        start_server(backend="redis", redis_url="redis://127.0.0.1:1/0")


async def test_redis_outage_and_recovery(
    start_server: Starter, private_redis: PrivateRedis, mint: Mint, item: str
) -> None:
    server = start_server(backend="redis", redis_url=private_redis.url, presence_ttl_s=3)
    a, first = await join(server, item, mint("alice"))
    await send_json(a, {"type": "publish", "data": "before", "ref": "b"})
    assert (await recv_json(a))["seq"] == 1
    assert server.get("/readyz").status_code == 200

    private_redis.stop()
    wait_ready(server, False)
    # Publishing is answered with an error, not dropped silently.
    await send_json(a, {"type": "publish", "data": "during", "ref": "d"})
    error = await recv_json(a, timeout=15)
    assert (error["type"], error["code"], error["ref"]) == ("error", "unavailable", "d")
    # New connections are refused with a close code and reason.
    refused = await open_room(server, item, mint("bob"))
    assert await closed_with(refused, timeout=15) == (1011, "internal_error")
    assert server.get("/healthz").status_code == 200  # alive, just not ready

    private_redis.start()  # empty: no persistence, every key is gone
    # The room's sequence is lost: its member is told so, and resumes.
    assert await closed_with(a, timeout=15) == (1012, "epoch_changed")
    wait_ready(server, True)
    a, welcome = await join(
        server, item, mint("alice"), since=1, extra_query={"epoch": first["epoch"]}
    )
    assert welcome["recovered"] is False and welcome["epoch"] != first["epoch"]
    # Numbering goes on after what members saw: a v1 client resuming with since=1 alone
    # would see a gap (recovered: false) rather than another message under seq 1.
    await send_json(a, {"type": "publish", "data": "after", "ref": "a"})
    frame = await recv_type(a, "message", timeout=10)
    assert (frame["seq"], frame["data"], frame["ref"]) == (welcome["seq"] + 1, "after", "a")
    assert frame["seq"] >= 2
    # A newcomer sees alice (registered in the empty Redis) and the room's seq.
    b, bob_welcome = await join(server, item, mint("bob"))
    async with a, b:
        assert [m["user"] for m in bob_welcome["members"]] == ["alice"]
        assert (bob_welcome["seq"], bob_welcome["epoch"]) == (frame["seq"], welcome["epoch"])
        joined = await recv_type(a, "presence")
        assert joined["event"] == "join" and joined["user"] == "bob"
        await send_json(b, {"type": "publish", "data": "hi"})
        assert (await recv_type(a, "message"))["seq"] == frame["seq"] + 1
        assert (await recv_type(b, "message"))["seq"] == frame["seq"] + 1
