"""Faults whose answer is the same on both shared backends, over the wire: real
``itemrooms serve`` processes on a private Redis or PostgreSQL, real clients.

- The backend unreachable at start: one line, and no server.
- The backend lost with everything it held: refusals and error frames meanwhile,
  then 1012 ``epoch_changed``, a resume that says ``recovered: false``, and numbering
  that goes on after what members saw.
- A process killed: its members leave within the presence TTL.
- A process paused past the TTL: its members leave, then join again, and its
  connections lived through it.

What is each backend's own is in test_redis_*.py and test_postgres_*.py; the fault
kit (chaos/, tests/chaos/test_short_run.py) runs both with busy clients.
"""

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chaos.postgres_server import PrivatePostgres
from tests.conftest import Mint, assert_healthy
from tests.support.backends import TTL_S, PrivateBackend
from tests.support.client import closed_with, join, open_room, recv_json, recv_type, send_json
from tests.support.faults import present, until, wait_ready
from tests.support.redis_server import PrivateRedis
from tests.support.server import ServerProcess

Starter = Callable[..., ServerProcess]


@pytest.fixture(params=["redis", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PrivateBackend]:
    if request.param == "redis":
        redis = PrivateRedis(tmp_path).start()
        yield PrivateBackend(redis=redis)
        redis.stop()
    else:
        postgres: PrivatePostgres = request.getfixturevalue("private_postgres")
        yield PrivateBackend(postgres=postgres)


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"backend": "redis", "redis_url": "redis://127.0.0.1:1/0"}, "cannot reach Redis at "),
        (
            {"backend": "postgres", "postgres_url": "postgresql://postgres@127.0.0.1:1/postgres"},
            "cannot reach PostgreSQL at postgresql://postgres@127.0.0.1:1/postgres",
        ),
    ],
)
def test_an_unreachable_backend_at_start_is_a_one_line_error(
    start_server: Starter, settings: dict[str, str], said: str
) -> None:
    with pytest.raises(RuntimeError, match=said):
        start_server(**settings)


async def test_the_backend_lost_and_back_empty(
    start_server: Starter, backend: PrivateBackend, mint: Mint, item: str
) -> None:
    server = start_server(**backend.settings(presence_ttl_s=3))
    a, first = await join(server, item, mint("alice"))
    await send_json(a, {"type": "publish", "data": "before", "ref": "b"})
    assert (await recv_json(a))["seq"] == 1
    assert server.get("/readyz").status_code == 200

    backend.lose_everything()
    await wait_ready(server, False)
    # Publishing is answered with an error, not dropped silently.
    await send_json(a, {"type": "publish", "data": "during", "ref": "d"})
    error = await recv_json(a, timeout=15)
    assert (error["type"], error["code"], error["ref"]) == ("error", "unavailable", "d")
    # New connections are refused with a close code and reason.
    refused = await open_room(server, item, mint("bob"))
    assert await closed_with(refused, timeout=15) == (1011, "internal_error")
    assert server.get("/healthz").status_code == 200  # alive, just not ready

    await backend.come_back()  # empty: every key, every table is gone
    # The room's sequence is lost: its member is told so, and resumes.
    assert await closed_with(a, timeout=15) == (1012, "epoch_changed")
    await wait_ready(server, True)
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
    # A newcomer sees alice (registered in the empty backend) and the room's seq.
    b, bob_welcome = await join(server, item, mint("bob"))
    async with a, b:
        assert [m["user"] for m in bob_welcome["members"]] == ["alice"]
        assert (bob_welcome["seq"], bob_welcome["epoch"]) == (frame["seq"], welcome["epoch"])
        joined = await recv_type(a, "presence")
        assert joined["event"] == "join" and joined["user"] == "bob"
        await send_json(b, {"type": "publish", "data": "hi"})
        assert (await recv_type(a, "message"))["seq"] == frame["seq"] + 1
        assert (await recv_type(b, "message"))["seq"] == frame["seq"] + 1
    await assert_healthy(server)


async def test_members_of_a_killed_process_leave_within_the_ttl(
    start_server: Starter, backend: PrivateBackend, mint: Mint, item: str
) -> None:
    one, two = start_server(**backend.settings()), start_server(**backend.settings())
    a, _ = await join(one, item, mint("alice"))
    async with a:
        b, wb = await join(two, item, mint("bob"))
        await recv_type(a, "presence")
        assert two.process is not None
        two.process.send_signal(signal.SIGKILL)
        left = await recv_type(a, "presence", timeout=4 * TTL_S + 5)
        assert (left["event"], left["client_id"]) == ("leave", wb["client_id"])
        b.transport.abort()
        c, wc = await join(one, item, mint("carol"))
        async with c:
            assert [m["user"] for m in wc["members"]] == ["alice"]


async def test_a_process_stopped_past_the_presence_ttl_leaves_then_joins_again(
    start_server: Starter, backend: PrivateBackend, mint: Mint, item: str
) -> None:
    one, two = start_server(**backend.settings()), start_server(**backend.settings())
    alice, wa = await join(one, item, mint("alice"))
    bob, wb = await join(two, item, mint("bob"))
    reader = mint("reader", scope=["items:read"])
    async with alice, bob:
        joined = await recv_type(alice, "presence")
        assert (joined["event"], joined["client_id"]) == ("join", wb["client_id"])
        assert two.process is not None
        two.process.send_signal(signal.SIGSTOP)  # a VM pause, a long GC
        try:
            left = await recv_type(alice, "presence", timeout=TTL_S + 5)
            assert (left["event"], left["client_id"]) == ("leave", wb["client_id"])
            assert await present(one, item, reader) == {"alice"}
        finally:
            two.process.send_signal(signal.SIGCONT)
        back = await recv_type(alice, "presence", timeout=TTL_S + 5)
        assert (back["event"], back["client_id"]) == ("join", wb["client_id"])
        both = {"alice", "bob"}
        for server in (one, two):

            async def lists_both(server: ServerProcess = server) -> bool:
                return await present(server, item, reader) == both

            await until(lists_both, f"GET /presence on :{server.port} lists both", TTL_S + 3)
        # Bob's connection lived through it.
        await send_json(bob, {"type": "publish", "data": "still here", "ref": "b"})
        assert (await recv_type(bob, "message"))["ref"] == "b"
        assert (await recv_type(alice, "message"))["data"] == "still here"
    await assert_healthy(two)
