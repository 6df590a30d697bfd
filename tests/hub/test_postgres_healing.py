"""The PostgreSQL backend under trouble, one fault at a time, at the backend's own level:
no publish applied twice, no ack lost to a gap, a lost connection replaced with
nothing missed, a database come back empty announced as a new epoch, and presence that
repairs itself. tests/integration/test_postgres_faults.py has the same over the wire."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from chaos.postgres_server import PrivatePostgres, terminate_backends
from itemrooms.api.hub.backends.base import (
    BackendUnavailable,
    EpochChange,
    Event,
    Message,
    OutcomeUnknown,
    Sender,
)
from itemrooms.api.hub.backends.postgres import PostgresBackend
from itemrooms.api.hub.backends.postgres_listener import Listener
from itemrooms.api.hub.backends.postgres_publish import PublishBatcher
from tests.conftest import POSTGRES_URL
from tests.hub.conftest import WAIT_S, PostgresFactory, Recorder, lapse_of, present, until

ALICE = Sender("alice", "c_a")
BOB = Sender("bob", "c_b")


def seqs(events: list[Event]) -> list[int]:
    return [e.seq for e in events if isinstance(e, Message)]


def application(node: PostgresBackend) -> str:
    return f"itemrooms-%-{node.node_id}"


async def test_a_publish_postgres_stalls_on_is_outcome_unknown_and_its_retry_applies_once(
    postgres_nodes: PostgresFactory, private_postgres: PrivatePostgres
) -> None:
    node, _ = await postgres_nodes(private_postgres.url(), command_timeout_s=0.5)
    await node.publish("warm", ALICE, b"0", None)  # the publishing connection, open
    private_postgres.pause()
    try:
        with pytest.raises(OutcomeUnknown):  # sent, then no answer in time: never retried
            await node.publish("r", ALICE, b'"x"', "r1", "m-1")
    finally:
        private_postgres.resume()

    async def ready() -> bool:
        return await node.ready()

    await until(ready, "never ready after the stall")
    # Applied or not, the retry with the same id leaves exactly one message.
    retry = await node.publish("r", ALICE, b'"x"', "r2", "m-1")
    assert retry.seq == 1
    snap = await node.snapshot("r", 0)
    assert [(m.seq, m.id) for m in snap.messages] == [(1, "m-1")] and snap.seq == 1


async def test_a_publish_while_postgres_is_down_is_certainly_not_published(
    postgres_nodes: PostgresFactory, private_postgres: PrivatePostgres
) -> None:
    node, _ = await postgres_nodes(private_postgres.url(), command_timeout_s=0.5)
    assert (await node.publish("r", ALICE, b"1", None)).seq == 1
    private_postgres.crash()
    await until(_not(node.ready), "still ready with PostgreSQL down")
    with pytest.raises(BackendUnavailable):
        await node.publish("r", ALICE, b"2", None, "m-2")
    await private_postgres.start()

    async def ready() -> bool:
        return await node.ready()

    await until(ready, "never ready after the restart")
    assert (await node.snapshot("r", None)).seq == 1  # nothing of the refused one
    assert (await node.publish("r", ALICE, b"2", None, "m-2")).seq == 2


async def test_a_message_the_listener_missed_comes_from_history_with_its_ack(
    postgres_nodes: PostgresFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    notified = Listener._notified
    lost: list[str] = []

    def lose_the_first(self: Listener, conn: Any, pid: int, channel: str, payload: str) -> None:
        if payload.startswith("m") and not lost:
            lost.append(payload)  # as if it went by while the connection was down
            return
        notified(self, conn, pid, channel, payload)

    monkeypatch.setattr(Listener, "_notified", lose_the_first)
    node, events = await postgres_nodes()
    await node.subscribe("r")
    await node.publish("r", ALICE, b"1", "ack-1", "m-1")
    await node.publish("r", ALICE, b"2", "ack-2")
    messages = [e for e in await events.count(2) if isinstance(e, Message)]
    assert [(m.seq, m.ref, m.id) for m in messages] == [(1, "ack-1", "m-1"), (2, "ack-2", None)]
    assert lost


async def test_a_terminated_connection_is_replaced_and_nothing_is_missed_or_repeated(
    postgres_nodes: PostgresFactory,
) -> None:
    """pg_terminate_backend of every connection of one process (what an operator or a
    failover does): not ready and publishes refused until it is back, then what it
    missed arrives from history, once each, in order."""
    watcher, events = await postgres_nodes(command_timeout_s=1.0)
    publisher, _ = await postgres_nodes()
    await watcher.subscribe("r")
    await watcher.join("r", ALICE)
    await publisher.publish("r", BOB, b"1", None)
    await events.until(lambda evs: seqs(evs) == [1])
    gate = asyncio.Event()  # holds the new listening connection back until opened
    connect = watcher.listener._connect

    async def held() -> Any:
        await gate.wait()
        return await connect()

    watcher.listener._connect = held
    assert await terminate_backends(POSTGRES_URL, application(watcher)) >= 2

    async def listener_lost() -> bool:
        return not watcher.listener.live

    await until(listener_lost, "the lost listening connection was never noticed")
    assert not await watcher.ready()
    with pytest.raises(BackendUnavailable):  # certainly not published
        await watcher.publish("r", ALICE, b"x", None)
    for n in (2, 3, 4):  # while the watcher is away
        await publisher.publish("r", BOB, b"%d" % n, None)
    gate.set()
    await until(watcher.ready, "never ready again")
    await events.until(lambda evs: seqs(evs) == [1, 2, 3, 4])
    assert (await watcher.publish("r", ALICE, b"5", "r5")).seq == 5
    await events.until(lambda evs: seqs(evs) == [1, 2, 3, 4, 5])
    assert "alice" in await present(publisher, "r")


async def test_a_restarted_postgres_keeps_every_seq_and_presence_does_not_flap(
    postgres_nodes: PostgresFactory, private_postgres: PrivatePostgres
) -> None:
    """A crash and restart keeps what was committed; presence (unlogged) is gone and
    every process registers its members again, with no leave for anyone present."""
    one, events = await postgres_nodes(private_postgres.url(), command_timeout_s=1.0)
    two, _ = await postgres_nodes(private_postgres.url(), command_timeout_s=1.0)
    await one.subscribe("r")
    await one.join("r", ALICE)
    await two.subscribe("r")
    await two.join("r", BOB)
    for n in (1, 2, 3):
        await two.publish("r", BOB, b"%d" % n, None)
    await events.until(lambda evs: seqs(evs) == [1, 2, 3] and lapse_of(evs, BOB) == ["join"])
    private_postgres.crash()
    await until(_not(one.ready), "still ready with PostgreSQL down")
    await private_postgres.start()
    await until(one.ready, "never ready again")
    await until(two.ready, "never ready again")

    async def both_present() -> bool:
        members = await present(one, "r")
        return "alice" in members and "bob" in members

    await until(both_present, "presence never registered again")
    assert (await two.publish("r", BOB, b"4", None)).seq == 4
    await events.until(lambda evs: seqs(evs) == [1, 2, 3, 4])
    assert lapse_of(events.events, BOB) == ["join"]  # no leave/join flapping
    assert not any(isinstance(e, EpochChange) for e in events.events)


async def test_a_database_come_back_empty_is_a_new_epoch_numbered_after_what_was_seen(
    postgres_nodes: PostgresFactory, private_postgres: PrivatePostgres
) -> None:
    node, events = await postgres_nodes(private_postgres.url(), command_timeout_s=1.0)
    await node.subscribe("r")
    await node.join("r", ALICE)
    for n in (1, 2, 3):
        first = await node.publish("r", ALICE, b"%d" % n, None)
    await events.until(lambda evs: seqs(evs) == [1, 2, 3])
    private_postgres.wipe()  # the tables, the schema and all: gone
    await private_postgres.start()
    await events.until(lambda evs: any(isinstance(e, EpochChange) for e in evs))
    await until(node.ready, "never ready again")
    snap = await node.snapshot("r", 0)
    assert snap.epoch != first.epoch and snap.seq == 3 and not snap.recovered
    after = await node.publish("r", ALICE, b"4", None)
    assert (after.seq, after.epoch) == (4, snap.epoch)  # no seq 1 under the members' feet
    assert "alice" in await present(node, "r")


async def test_a_process_whose_heartbeat_lapsed_registers_its_members_again(
    postgres_nodes: PostgresFactory, postgres_schema: str
) -> None:
    # A long TTL keeps the heartbeat loops out of the way: the beats are driven by hand.
    stalled, _ = await postgres_nodes(presence_ttl_s=30.0)
    other, events = await postgres_nodes(presence_ttl_s=30.0)
    await other.subscribe("r")
    await stalled.join("r", ALICE)
    await events.until(lambda evs: lapse_of(evs, ALICE) == ["join"])
    # What the others see of a process stalled past the TTL: its heartbeat is old, so
    # they reap its members (and announce them gone).
    await _age_heartbeat(postgres_schema, stalled.node_id)
    await other.presence.reap_dead_nodes()
    await events.until(lambda evs: lapse_of(evs, ALICE) == ["join", "leave"])
    # The stalled process notices at its next heartbeat and registers them again.
    await stalled.presence.heartbeat()
    assert stalled.presence.dirty
    await stalled.presence.reconcile()
    await events.until(lambda evs: lapse_of(evs, ALICE) == ["join", "leave", "join"])
    assert "alice" in await present(other, "r")


async def test_a_join_that_finds_its_node_reaped_is_registered_with_the_node(
    postgres_nodes: PostgresFactory, postgres_schema: str
) -> None:
    stalled, _ = await postgres_nodes(presence_ttl_s=30.0)
    other, events = await postgres_nodes(presence_ttl_s=30.0)
    await other.subscribe("r")
    await _age_heartbeat(postgres_schema, stalled.node_id)
    await other.presence.reap_dead_nodes()
    await stalled.join("r", ALICE)  # the node is gone: nothing written, yet
    assert stalled.presence.dirty and "alice" not in await present(other, "r")
    await stalled.presence.heartbeat()
    await stalled.presence.reconcile()
    await events.until(lambda evs: lapse_of(evs, ALICE) == ["join"])


async def test_a_leave_that_failed_is_done_later_without_a_reconnect(
    postgres_nodes: PostgresFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    node, _ = await postgres_nodes(presence_ttl_s=1.0)
    await node.join("r", ALICE)
    await node.join("r", BOB)

    async def unreachable(*_: Any) -> None:
        raise BackendUnavailable("PostgreSQL paused")

    with monkeypatch.context() as patch:
        patch.setattr(node.presence, "_unregister", unreachable)
        await node.leave("r", ALICE)  # never raises: the leave is owed, not forgotten

    async def alice_gone() -> bool:
        return "alice" not in await present(node, "r")

    await until(alice_gone, "the failed leave was never done")
    assert "bob" in await present(node, "r")


@pytest.mark.parametrize("stall", ["failed", "late"])
async def test_after_a_stall_no_live_process_is_reaped(
    postgres_nodes: PostgresFactory,
    postgres_schema: str,
    monkeypatch: pytest.MonkeyPatch,
    stall: str,
) -> None:
    """Heartbeats look old to everyone right after the database stalled. A process
    whose own heartbeat failed or came late reaps nobody for a TTL."""
    member_node, _ = await postgres_nodes(presence_ttl_s=30.0)
    watcher, events = await postgres_nodes(presence_ttl_s=30.0)
    await watcher.subscribe("r")
    await member_node.join("r", ALICE)
    await events.until(lambda evs: lapse_of(evs, ALICE) == ["join"])
    await _age_heartbeat(postgres_schema, member_node.node_id)
    if stall == "failed":

        async def unanswered(*_: Any) -> None:
            raise BackendUnavailable("PostgreSQL: TimeoutError")

        with monkeypatch.context() as patch:
            patch.setattr(watcher.presence, "_query", unanswered)
            with pytest.raises(BackendUnavailable):
                await watcher.presence.heartbeat()
    else:
        await watcher.presence.heartbeat()
        monkeypatch.setattr(watcher.presence, "_beat_at", watcher.presence._beat_at - 25.0)
    await watcher.presence.heartbeat()
    await watcher.presence.reap_dead_nodes()
    assert "alice" in await present(watcher, "r")
    await member_node.publish("r", ALICE, b'"marker"', None)
    await events.until(lambda evs: any(isinstance(e, Message) for e in evs))
    assert lapse_of(events.events, ALICE) == ["join"]


async def test_idle_rooms_are_forgotten_but_not_rooms_with_members_or_closed_ones(
    postgres_nodes: PostgresFactory, postgres_schema: str
) -> None:
    node, _ = await postgres_nodes()
    for item_id in ("kept", "dropped", "closed"):
        await node.publish(item_id, ALICE, b"1", None, "m-1")
    await node.join("kept", ALICE)
    await node.control("closed", "close", None)
    conn = await asyncpg.connect(POSTGRES_URL)
    try:  # as if a week went by without a message
        await conn.execute(f'UPDATE "{postgres_schema}".rooms SET active_ms = 0')
        assert await conn.fetchval(f'SELECT "{postgres_schema}".upkeep(60000)') == 1
        left = await conn.fetch(f'SELECT item FROM "{postgres_schema}".messages ORDER BY item')
    finally:
        await conn.close()
    assert [r["item"] for r in left] == ["closed", "kept"]
    assert (await node.snapshot("kept", None)).seq == 1
    assert (await node.snapshot("dropped", None)).seq == 0
    assert await node.refusal("closed", "bob") == "item_closed"


async def test_publishes_in_rooms_of_both_orders_from_two_processes_never_deadlock(
    postgres_nodes: PostgresFactory,
) -> None:
    """A batch locks its rooms in item order, whatever order its calls came in."""
    one, _ = await postgres_nodes()
    two, _ = await postgres_nodes()

    async def burst(node: PostgresBackend, rooms: tuple[str, str]) -> None:
        for _ in range(20):  # batches of both orders, again and again
            await asyncio.gather(*(node.publish(r, ALICE, b"1", None) for r in rooms * 10))

    await asyncio.wait_for(
        asyncio.gather(burst(one, ("a", "b")), burst(two, ("b", "a"))), WAIT_S * 2
    )
    assert (await one.snapshot("a", None)).seq == (await one.snapshot("b", None)).seq == 400


async def test_concurrent_publishes_keep_their_order_and_share_round_trips(
    postgres_nodes: PostgresFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    node, _ = await postgres_nodes()
    calls = 0
    send = PublishBatcher._send

    async def counting(self: PublishBatcher, batch: list[Any]) -> None:
        nonlocal calls
        calls += 1
        await send(self, batch)

    monkeypatch.setattr(PublishBatcher, "_send", counting)
    results = await asyncio.gather(*(node.publish("r", ALICE, b"%d" % i, None) for i in range(100)))
    assert [r.seq for r in results] == list(range(1, 101))  # call order is seq order
    assert 1 <= calls <= 5  # batched: not one round trip (and commit) per publish


async def test_processes_starting_together_on_a_new_schema_all_start(
    postgres_schema: str,
) -> None:
    nodes = [PostgresBackend(POSTGRES_URL, schema=postgres_schema) for _ in range(4)]
    try:
        await asyncio.gather(*(node.start(Recorder()) for node in nodes))
    finally:
        await asyncio.gather(*(node.stop() for node in nodes))


async def test_a_schema_of_another_version_is_refused_with_what_to_do(
    postgres_schema: str,
) -> None:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f'CREATE SCHEMA "{postgres_schema}"')
        await conn.execute(f'CREATE TABLE "{postgres_schema}".rooms (item text)')
    finally:
        await conn.close()
    node = PostgresBackend(POSTGRES_URL, schema=postgres_schema)
    with pytest.raises(BackendUnavailable, match="another itemrooms version.*DROP SCHEMA"):
        await node.start(Recorder())


def _not(check: Callable[[], Awaitable[bool]]) -> Callable[[], Awaitable[bool]]:
    async def negated() -> bool:
        return not await check()

    return negated


async def _age_heartbeat(schema: str, node_id: str) -> None:
    """What a stall past the TTL looks like to the others: an old heartbeat."""
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f'UPDATE "{schema}".nodes SET seen_ms = 0 WHERE node = $1', node_id)
    finally:
        await conn.close()


async def test_a_subscribe_the_connection_is_lost_under_is_refused_and_leaves_nothing(
    postgres_nodes: PostgresFactory,
) -> None:
    """The subscribe waits its turn on the listening connection; the connection goes
    meanwhile: the subscribe says unavailable (the hub closes its member with 1011) and
    no half-subscribed room stays behind to block the repair."""
    node, _ = await postgres_nodes()
    listener = node.listener
    async with listener._using:  # a probe or another LISTEN holds the connection
        subscribing = asyncio.ensure_future(node.subscribe("r"))
        await asyncio.sleep(0)  # the subscribe registered the room, waits for the lock
        listener.lost("cut in the test", reconnect=True)
    with pytest.raises(BackendUnavailable):
        await asyncio.wait_for(subscribing, WAIT_S)
    assert "r" not in listener.rooms
    await until(node.ready, "never ready again")
    await node.subscribe("r")  # and the room can be joined again
