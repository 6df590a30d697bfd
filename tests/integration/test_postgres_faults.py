"""PostgreSQL trouble over the wire: real ``itemrooms serve`` processes on a private
PostgreSQL that the test crashes and restarts with its data, or cuts off
(``pg_terminate_backend``). What a client sees: recovery by itself, every acknowledged
message once, no seq reused within an epoch. What holds on Redis too (the database
lost for good, a process killed or paused) is in test_backend_faults.py.

The fault kit (chaos/, ``--backend postgres``) runs the same faults with busy clients;
tests/chaos/test_short_run.py runs it as make test does.
"""

import asyncio
from collections.abc import Callable
from typing import Any

from chaos.postgres_server import PrivatePostgres, terminate_backends
from tests.conftest import Mint, assert_healthy
from tests.support.backends import PrivateBackend
from tests.support.client import join, recv_json, recv_type, send_json
from tests.support.faults import Frame, frames_until, history, present, wait_ready
from tests.support.server import ServerProcess

Starter = Callable[..., ServerProcess]


async def test_a_restart_keeps_every_acknowledged_message_once_and_no_seq_twice(
    start_server: Starter, private_postgres: PrivatePostgres, mint: Mint, item: str
) -> None:
    """A publisher with ids keeps publishing through a crash and restart (data kept):
    members stay connected and see every message once, in order; every publish is
    answered; retries with the same id make one message each."""
    settings = PrivateBackend(postgres=private_postgres).settings()
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
    settings = PrivateBackend(postgres=private_postgres).settings()
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
