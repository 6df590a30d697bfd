"""PostgreSQL trouble over the wire: real ``itemrooms serve`` processes on a private
PostgreSQL that the test crashes, empties, or cuts off (``pg_terminate_backend``), and
processes that are killed or paused. What a client sees: refusals and error frames
while the database is away, recovery by itself, every acknowledged message once, no
seq reused within an epoch, and presence that comes back true.

The fault kit (chaos/, ``--backend postgres``) runs the same faults with busy clients;
tests/chaos/test_short_run.py runs it as make test does.
"""

import asyncio
import signal
from collections.abc import Callable
from typing import Any

import pytest

from chaos.postgres_server import PrivatePostgres, terminate_backends
from tests.conftest import Mint, assert_healthy
from tests.support.client import closed_with, join, open_room, recv_json, recv_type, send_json
from tests.support.faults import Frame, frames_until, history, present, until, wait_ready
from tests.support.server import ServerProcess

Starter = Callable[..., ServerProcess]
TTL_S = 2


def on_postgres(postgres: PrivatePostgres, **overrides: Any) -> dict[str, Any]:
    """Settings of a server on ``postgres``, short enough for a test of a few seconds."""
    settings: dict[str, Any] = {"backend": "postgres", "postgres_url": postgres.url()}
    settings |= {"presence_ttl_s": TTL_S, "postgres_timeout_s": 1, "history_size": 1000}
    return settings | overrides


def test_unreachable_postgres_at_start_is_a_one_line_error(start_server: Starter) -> None:
    url = "postgresql://postgres@127.0.0.1:1/postgres"
    with pytest.raises(RuntimeError, match="cannot reach PostgreSQL at postgresql://postgres@"):
        start_server(backend="postgres", postgres_url=url)


async def test_postgres_outage_and_recovery_empty(
    start_server: Starter, private_postgres: PrivatePostgres, mint: Mint, item: str
) -> None:
    server = start_server(**on_postgres(private_postgres))
    a, first = await join(server, item, mint("alice"))
    await send_json(a, {"type": "publish", "data": "before", "ref": "b"})
    assert (await recv_json(a))["seq"] == 1

    private_postgres.wipe()  # down, and back as a new, empty cluster
    await wait_ready(server, False)
    # Publishing is answered with an error, not dropped silently.
    await send_json(a, {"type": "publish", "data": "during", "ref": "d"})
    error = await recv_json(a, timeout=15)
    assert (error["type"], error["code"], error["ref"]) == ("error", "unavailable", "d")
    # New connections are refused with a close code and reason.
    refused = await open_room(server, item, mint("bob"))
    assert await closed_with(refused, timeout=15) == (1011, "internal_error")
    assert server.get("/healthz").status_code == 200  # alive, just not ready

    await private_postgres.start()
    # The room's sequence is lost: its member is told so, and resumes.
    assert await closed_with(a, timeout=15) == (1012, "epoch_changed")
    await wait_ready(server, True)
    a, welcome = await join(
        server, item, mint("alice"), since=1, extra_query={"epoch": first["epoch"]}
    )
    assert welcome["recovered"] is False and welcome["epoch"] != first["epoch"]
    # Numbering goes on after what members saw.
    await send_json(a, {"type": "publish", "data": "after", "ref": "a"})
    frame = await recv_type(a, "message", timeout=10)
    assert (frame["seq"], frame["data"], frame["ref"]) == (welcome["seq"] + 1, "after", "a")
    assert frame["seq"] >= 2
    b, bob_welcome = await join(server, item, mint("bob"))
    async with a, b:
        assert [m["user"] for m in bob_welcome["members"]] == ["alice"]
        assert (await recv_type(a, "presence"))["user"] == "bob"
    await assert_healthy(server)


async def test_a_restart_keeps_every_acknowledged_message_once_and_no_seq_twice(
    start_server: Starter, private_postgres: PrivatePostgres, mint: Mint, item: str
) -> None:
    """A publisher with ids keeps publishing through a crash and restart (data kept):
    members stay connected and see every message once, in order; every publish is
    answered; retries with the same id make one message each."""
    settings = on_postgres(private_postgres)
    one, two = start_server(**settings), start_server(**settings)
    reader, _ = await join(one, item, mint("reader"))
    writer, _ = await join(two, item, mint("writer"))
    acked: dict[str, int] = {}
    async with reader, writer:
        await recv_type(reader, "presence")
        for n in range(40):
            if n == 20:
                private_postgres.crash()
                await _publish_refused(writer, n)
                await private_postgres.start()
            acked[f"m-{n}"] = await _publish_until_acked(writer, n)
        frames = await frames_until(reader, lambda f: f.get("id") == "m-39", timeout=20)
    seen = [(f["seq"], f["id"]) for f in frames if f["type"] == "message"]
    assert [s for s, _ in seen] == list(range(1, 41))  # once each, in order, no gap
    assert dict((i, s) for s, i in seen) == acked
    kept = await history(one, item, mint("reader"))
    assert [(m["seq"], m["id"]) for m in kept["messages"]] == seen
    await assert_healthy(one)
    await assert_healthy(two)


async def _publish_refused(ws: Any, n: int) -> None:
    """A publish while the database is down: answered with an error at once."""
    await send_json(ws, {"type": "publish", "data": n, "ref": "down", "id": f"m-{n}"})
    frame = await _answer(ws, "down")
    assert frame["type"] == "error" and frame["code"] in ("unavailable", "outcome_unknown")


async def _answer(ws: Any, ref: str) -> Frame:
    """The frame that answers the publish ``ref`` (other frames go by)."""
    while True:
        frame: Frame = await recv_json(ws, timeout=15)
        if frame.get("ref") == ref:
            return frame


async def _publish_until_acked(ws: Any, n: int, timeout: float = 30.0) -> int:
    """Publish with id m-<n>, again with the same id while the answer is unavailable
    or outcome_unknown; the seq of its (own or duplicate) copy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    attempt = 0
    while True:
        attempt += 1
        ref = f"{n}.{attempt}"
        await send_json(ws, {"type": "publish", "data": n, "ref": ref, "id": f"m-{n}"})
        frame = await _answer(ws, ref)
        if frame["type"] == "message":
            seq: int = frame["seq"]
            return seq
        assert frame["code"] in ("unavailable", "outcome_unknown"), frame
        assert loop.time() < deadline, f"m-{n} never acknowledged"
        await asyncio.sleep(0.1)  # a client's retry pace, not a synchronisation


async def test_a_process_whose_connections_are_terminated_heals_with_nothing_missed(
    start_server: Starter, private_postgres: PrivatePostgres, mint: Mint, item: str
) -> None:
    """pg_terminate_backend of every connection of one process (an operator, a pooler,
    a failover): its members stay connected and miss nothing published meanwhile."""
    settings = on_postgres(private_postgres)
    one, two = start_server(**settings), start_server(**settings)
    reader, _ = await join(one, item, mint("reader"))
    writer, _ = await join(two, item, mint("writer"))
    async with reader, writer:
        await recv_type(reader, "presence")
        assert one.process is not None
        assert await terminate_backends(private_postgres.url(), f"itemrooms-{one.process.pid}-%")
        for n in range(5):  # while the reader's process finds new connections
            await send_json(writer, {"type": "publish", "data": n, "ref": str(n)})
        restored = "PostgreSQL connection restored"
        assert await asyncio.to_thread(one.wait_for_output, restored, 15), one.output
        frames = await frames_until(reader, lambda f: f.get("data") == 4, timeout=15)
        assert [f["seq"] for f in frames if f["type"] == "message"] == [1, 2, 3, 4, 5]
        await wait_ready(one, True)
        await send_json(reader, {"type": "publish", "data": "back", "ref": "y"})
        assert (await recv_type(reader, "message"))["ref"] == "y"
        assert (await frames_until(writer, lambda f: f.get("data") == "back"))[-1]["seq"] == 6
        reader_token = mint("someone", scope=["items:read"])
        assert len(await present(two, item, reader_token)) == 2
    await assert_healthy(one)


async def test_members_of_a_killed_process_leave_within_the_ttl(
    start_server: Starter, private_postgres: PrivatePostgres, mint: Mint, item: str
) -> None:
    settings = on_postgres(private_postgres)
    one, two = start_server(**settings), start_server(**settings)
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
    start_server: Starter, private_postgres: PrivatePostgres, mint: Mint, item: str
) -> None:
    settings = on_postgres(private_postgres)
    one, two = start_server(**settings), start_server(**settings)
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
            assert await present(one, item, reader) == {wa["client_id"]}
        finally:
            two.process.send_signal(signal.SIGCONT)
        back = await recv_type(alice, "presence", timeout=TTL_S + 5)
        assert (back["event"], back["client_id"]) == ("join", wb["client_id"])
        both = {wa["client_id"], wb["client_id"]}
        for server in (one, two):

            async def lists_both(server: ServerProcess = server) -> bool:
                return await present(server, item, reader) == both

            await until(lists_both, f"GET /presence on :{server.port} lists both", TTL_S + 3)
        await send_json(bob, {"type": "publish", "data": "still here", "ref": "b"})
        assert (await recv_type(bob, "message"))["ref"] == "b"
        assert (await recv_type(alice, "message"))["data"] == "still here"
    await assert_healthy(two)
