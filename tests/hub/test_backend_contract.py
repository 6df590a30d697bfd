"""The backend contract (api/hub/backends/base.py), run against every backend."""

import asyncio

from api.hub.backends.base import Backend, Message, Presence, Relay, Sender
from tests.hub.conftest import HISTORY, Recorder

ALICE = Sender("alice", "c_a")
BOB = Sender("bob", "c_b")
Fixture = tuple[Backend, Recorder]


async def test_ready(backend: Fixture) -> None:
    assert await backend[0].ready()


async def test_publish_assigns_consecutive_seqs_per_room(backend: Fixture) -> None:
    b, events = backend
    await b.subscribe("r1")
    await b.subscribe("r2")
    assert [await b.publish("r1", ALICE, b'"x"', None) for _ in range(3)] == [1, 2, 3]
    assert await b.publish("r2", ALICE, b"1", "ref") == 1
    messages = [e for e in events.events if isinstance(e, Message)]
    assert [(m.item_id, m.seq) for m in messages] == [("r1", 1), ("r1", 2), ("r1", 3), ("r2", 1)]
    assert messages[-1].ref == "ref" and messages[-1].data == b"1" and messages[-1].sender == ALICE


async def test_concurrent_publishes_never_share_a_seq(backend: Fixture) -> None:
    b, _ = backend
    seqs = await asyncio.gather(*(b.publish("r", ALICE, b"0", None) for _ in range(200)))
    assert sorted(seqs) == list(range(1, 201))


async def test_events_only_for_subscribed_rooms(backend: Fixture) -> None:
    b, events = backend
    await b.publish("r", ALICE, b"0", None)
    await b.join("r", ALICE)
    assert events.events == []
    await b.subscribe("r")
    await b.relay("r", ALICE, b"\x01")
    await b.unsubscribe("r")
    await b.publish("r", ALICE, b"0", None)
    assert events.events == [Relay("r", ALICE, b"\x01")]


async def test_presence_join_leave(backend: Fixture) -> None:
    b, events = backend
    await b.subscribe("r")
    await b.join("r", ALICE)
    await b.join("r", BOB)
    assert set((await b.snapshot("r", None)).members) == {ALICE, BOB}
    await b.leave("r", ALICE)
    await b.leave("r", ALICE)  # idempotent: no second event
    assert (await b.snapshot("r", None)).members == (BOB,)
    assert events.events == [
        Presence("r", "join", ALICE),
        Presence("r", "join", BOB),
        Presence("r", "leave", ALICE),
    ]


async def test_concurrent_joins_lose_no_member(backend: Fixture) -> None:
    b, events = backend
    await b.subscribe("r")
    members = [Sender(f"u{i}", f"c_{i}") for i in range(100)]
    await asyncio.gather(*(b.join("r", m) for m in members))
    assert set((await b.snapshot("r", None)).members) == set(members)
    assert len([e for e in events.events if isinstance(e, Presence)]) == 100


async def test_snapshot_without_since(backend: Fixture) -> None:
    b, _ = backend
    empty = await b.snapshot("new", None)
    assert (empty.seq, empty.members, empty.messages, empty.recovered) == (0, (), (), True)
    await b.publish("r", ALICE, b"0", None)
    snap = await b.snapshot("r", None)
    assert (snap.seq, snap.messages, snap.recovered) == (1, (), True)


async def test_history_after_since(backend: Fixture) -> None:
    b, _ = backend
    for i in range(5):
        await b.publish("r", ALICE, str(i).encode(), f"ref{i}")
    snap = await b.snapshot("r", 2)
    assert snap.seq == 5 and snap.recovered
    assert [(m.seq, m.data, m.ref) for m in snap.messages] == [
        (3, b"2", None),
        (4, b"3", None),
        (5, b"4", None),
    ]
    assert (await b.snapshot("r", 5)).messages == ()
    assert (await b.snapshot("r", 0)).recovered


async def test_history_is_bounded_and_says_when_it_lost_messages(backend: Fixture) -> None:
    b, _ = backend
    for _ in range(HISTORY + 3):
        await b.publish("r", ALICE, b"0", None)
    snap = await b.snapshot("r", 0)
    assert not snap.recovered
    assert [m.seq for m in snap.messages] == list(range(4, HISTORY + 4))
    assert (await b.snapshot("r", 3)).recovered
    assert not (await b.snapshot("r", 2)).recovered


async def test_since_beyond_the_latest_seq_returns_everything_unrecovered(backend: Fixture) -> None:
    b, _ = backend
    await b.publish("r", ALICE, b"0", None)
    snap = await b.snapshot("r", 99)
    assert snap.seq == 1 and not snap.recovered and [m.seq for m in snap.messages] == [1]


async def test_relay_is_neither_stored_nor_sequenced(backend: Fixture) -> None:
    b, _ = backend
    await b.subscribe("r")
    await b.relay("r", ALICE, b"\x00")
    snap = await b.snapshot("r", 0)
    assert snap.seq == 0 and snap.messages == ()
