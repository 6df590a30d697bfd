"""The backend contract (api/hub/backends/base.py), run against every backend.

Events may arrive after the call that caused them returns (over Redis they come
back through pub/sub), so tests wait for them, bounded, instead of reading at once.
"""

import asyncio

import pytest

from itemrooms.api.hub.backends.base import (
    BANNED,
    CLOSED,
    Backend,
    Control,
    ItemClosed,
    Message,
    Presence,
    PresencePage,
    Relay,
    Sender,
)
from tests.hub.conftest import HISTORY, Recorder, present

ALICE = Sender("alice", "c_a")
BOB = Sender("bob", "c_b")
Fixture = tuple[Backend, Recorder]


async def test_ready(backend: Fixture) -> None:
    assert await backend[0].ready()


async def test_publish_assigns_consecutive_seqs_per_room(backend: Fixture) -> None:
    b, events = backend
    await b.subscribe("r1")
    await b.subscribe("r2")
    assert [(await b.publish("r1", ALICE, b'"x"', None)).seq for _ in range(3)] == [1, 2, 3]
    assert (await b.publish("r2", ALICE, b"1", "ref")).seq == 1
    await events.count(4)
    messages = [e for e in events.events if isinstance(e, Message)]
    assert [(m.item_id, m.seq) for m in messages] == [("r1", 1), ("r1", 2), ("r1", 3), ("r2", 1)]
    last = messages[-1]
    assert (last.ref, last.data, last.sender) == ("ref", b"1", ALICE)
    assert messages[0].ref is None and messages[0].data == b'"x"'
    assert all(m.ts > 1_600_000_000_000 for m in messages)


async def test_concurrent_publishes_never_share_a_seq(backend: Fixture) -> None:
    b, _ = backend
    results = await asyncio.gather(*(b.publish("r", ALICE, b"0", None) for _ in range(200)))
    assert sorted(r.seq for r in results) == list(range(1, 201))


async def test_publishes_started_in_order_get_their_seqs_in_order(backend: Fixture) -> None:
    """A connection starts its publishes without waiting for each (one task each)."""
    b, _ = backend
    calls = [asyncio.ensure_future(b.publish("r", ALICE, b"%d" % i, None)) for i in range(100)]
    assert [r.seq for r in await asyncio.gather(*calls)] == list(range(1, 101))
    history = (await b.snapshot("r", 0)).messages
    assert [m.data for m in history][-HISTORY:] == [b"%d" % i for i in range(100 - HISTORY, 100)]


async def test_events_only_for_subscribed_rooms(backend: Fixture) -> None:
    b, events = backend
    await b.publish("r", ALICE, b"0", None)
    await b.join("r", ALICE)
    await b.subscribe("r")
    await b.relay("r", ALICE, b"\x01\n\x00")
    await events.count(1)
    await b.unsubscribe("r")
    await b.publish("r", ALICE, b"0", None)
    # A marker in another room: once it arrives, anything for "r" would have too.
    await b.subscribe("marker")
    await b.publish("marker", ALICE, b"0", None)
    await events.until(lambda evs: any(e.item_id == "marker" for e in evs))
    assert events.events[0] == Relay("r", ALICE, b"\x01\n\x00")
    assert [e.item_id for e in events.events] == ["r", "marker"]


async def test_presence_join_leave(backend: Fixture) -> None:
    b, events = backend
    await b.subscribe("r")
    await b.join("r", ALICE)
    await b.join("r", BOB)
    assert await present(b, "r") == {"alice": 1, "bob": 1}
    await b.leave("r", ALICE)
    await b.leave("r", ALICE)  # idempotent: no second event
    assert await present(b, "r") == {"bob": 1}
    await b.publish("r", BOB, b"0", None)  # a marker after the presence events
    await events.count(4)
    assert events.events[:3] == [
        Presence("r", "join", ALICE),
        Presence("r", "join", BOB),
        Presence("r", "leave", ALICE),
    ]
    assert isinstance(events.events[3], Message)


async def test_subscribe_returns_the_members_events_then_keep_true(backend: Fixture) -> None:
    """Backend.subscribe: what it returns plus every later event is the room's presence,
    so the hub never reads the room's members again."""
    b, events = backend
    await b.join("r", ALICE)  # before anyone here listened
    await b.join("r", BOB)
    members = await b.subscribe("r")
    assert set(members) == {ALICE, BOB}
    await b.leave("r", ALICE)
    await b.publish("r", BOB, b"0", None)  # a marker after the leave
    await events.until(lambda evs: any(isinstance(e, Message) for e in evs))
    assert [e for e in events.events if isinstance(e, Presence)] == [Presence("r", "leave", ALICE)]
    assert await b.subscribe("empty") == ()


async def test_presence_pages_users_with_their_connection_counts(backend: Fixture) -> None:
    """HTTP presence: one entry per user (two tabs are one user), by name, a page at a
    time, with the room's user count on every page."""
    b, _ = backend
    await b.subscribe("r")
    tabs = [Sender("zoe", "c_z1"), Sender("zoe", "c_z2"), Sender("Ann", "c_an")]
    for member in [ALICE, BOB, *tabs, Sender("ann", "c_a2")]:
        await b.join("r", member)
    first = await b.presence_page("r", None, 2)
    assert (first.member_count, first.users, first.next) == (
        5,
        (("Ann", 1), ("alice", 1)),  # bytewise: capitals first
        "alice",
    )
    second = await b.presence_page("r", first.next, 2)
    assert (second.users, second.next) == ((("ann", 1), ("bob", 1)), "bob")
    last = await b.presence_page("r", second.next, 2)
    assert (last.users, last.next) == ((("zoe", 2),), None)
    await b.leave("r", tabs[0])
    assert (await b.presence_page("r", "bob", 2)).users == (("zoe", 1),)
    await b.leave("r", tabs[1])
    gone = await b.presence_page("r", None, 10)
    assert (gone.member_count, [u for u, _ in gone.users]) == (4, ["Ann", "alice", "ann", "bob"])
    assert (await b.presence_page("nobody", None, 10)) == PresencePage(0, (), None)


async def test_concurrent_joins_lose_no_member(backend: Fixture) -> None:
    b, events = backend
    await b.subscribe("r")
    members = [Sender(f"u{i}", f"c_{i}") for i in range(100)]
    await asyncio.gather(*(b.join("r", m) for m in members))
    assert await present(b, "r", page=7) == {m.user: 1 for m in members}
    await events.count(100)
    assert {e.member for e in events.events if isinstance(e, Presence)} == set(members)


async def test_snapshot_without_since(backend: Fixture) -> None:
    b, _ = backend
    empty = await b.snapshot("new", None)
    assert (empty.seq, empty.messages, empty.recovered) == (0, (), True)
    await b.publish("r", ALICE, b"0", None)
    snap = await b.snapshot("r", None)
    assert (snap.seq, snap.messages, snap.recovered) == (1, (), True)


async def test_history_after_since(backend: Fixture) -> None:
    b, _ = backend
    for i in range(5):
        await b.publish("r", ALICE, str(i).encode(), f"ref{i}")
    snap = await b.snapshot("r", 2)
    assert snap.seq == 5 and snap.recovered
    assert [(m.seq, m.data, m.ref, m.sender) for m in snap.messages] == [
        (3, b"2", None, ALICE),
        (4, b"3", None, ALICE),
        (5, b"4", None, ALICE),
    ]
    assert (await b.snapshot("r", 5)).messages == ()
    assert (await b.snapshot("r", 0)).recovered


async def test_history_is_bounded_and_says_when_it_lost_messages(backend: Fixture) -> None:
    b, _ = backend
    total = HISTORY * 30  # far past the bound, also for approximately-trimmed histories
    for _ in range(total):
        await b.publish("r", ALICE, b"0", None)
    snap = await b.snapshot("r", 0)
    assert not snap.recovered
    kept = [m.seq for m in snap.messages]
    assert HISTORY <= len(kept) < total and kept == list(range(kept[0], total + 1))
    assert (await b.snapshot("r", kept[0] - 1)).recovered
    assert not (await b.snapshot("r", kept[0] - 2)).recovered


async def test_since_beyond_the_latest_seq_returns_everything_unrecovered(backend: Fixture) -> None:
    b, _ = backend
    await b.publish("r", ALICE, b"0", None)
    snap = await b.snapshot("r", 99)
    assert snap.seq == 1 and not snap.recovered and [m.seq for m in snap.messages] == [1]


async def test_relay_is_neither_stored_nor_sequenced(backend: Fixture) -> None:
    b, events = backend
    await b.subscribe("r")
    await b.relay("r", ALICE, b"\x00")
    await events.count(1)
    snap = await b.snapshot("r", 0)
    assert snap.seq == 0 and snap.messages == ()


async def test_data_with_newlines_and_unicode_round_trips(backend: Fixture) -> None:
    b, events = backend
    await b.subscribe("r")
    data = '{"text":"line\\nbreak é 😀","n":[1,2]}'.encode()
    sender = Sender("ünïcode user\n", "c_x")
    await b.publish("r", sender, data, "ref\nwith newline")
    (event,) = await events.count(1)
    assert isinstance(event, Message)
    assert (event.data, event.sender, event.ref) == (data, sender, "ref\nwith newline")
    (stored,) = (await b.snapshot("r", 0)).messages
    assert (stored.data, stored.sender) == (data, sender)


# --- v1.1: publish ids and epochs ---------------------------------------------


async def test_a_repeated_id_is_published_once_and_answers_with_the_original(
    backend: Fixture,
) -> None:
    b, events = backend
    await b.subscribe("r")
    first = await b.publish("r", ALICE, b'"once"', "r1", "m-1")
    again = await b.publish("r", ALICE, b'"once"', "r2", "m-1")
    assert first.duplicate is None and again.seq == first.seq and again.epoch == first.epoch
    original = again.duplicate
    assert original is not None
    assert (original.seq, original.data, original.id, original.sender) == (
        first.seq,
        b'"once"',
        "m-1",
        ALICE,
    )
    await b.publish("r", ALICE, b'"marker"', None)  # once it arrives, a second copy would have
    await events.until(
        lambda evs: any(isinstance(e, Message) and e.data == b'"marker"' for e in evs)
    )
    messages = [e for e in events.events if isinstance(e, Message)]
    assert [(m.seq, m.id, m.ref) for m in messages] == [(1, "m-1", "r1"), (2, None, None)]
    stored = (await b.snapshot("r", 0)).messages
    assert [(m.seq, m.id) for m in stored] == [(1, "m-1"), (2, None)]


async def test_ids_are_scoped_by_user_and_room(backend: Fixture) -> None:
    b, _ = backend
    assert (await b.publish("r", ALICE, b"1", None, "same")).duplicate is None
    assert (await b.publish("r", BOB, b"1", None, "same")).duplicate is None
    assert (await b.publish("other", ALICE, b"1", None, "same")).duplicate is None
    assert (await b.snapshot("r", None)).seq == 2


async def test_concurrent_repeats_of_one_id_publish_one_message(backend: Fixture) -> None:
    b, _ = backend
    results = await asyncio.gather(*(b.publish("r", ALICE, b"1", None, "m-x") for _ in range(20)))
    assert {r.seq for r in results} == {1}
    assert sum(r.duplicate is None for r in results) == 1
    assert [m.seq for m in (await b.snapshot("r", 0)).messages] == [1]


async def test_the_epoch_names_the_sequence_and_a_foreign_one_is_not_recovered(
    backend: Fixture,
) -> None:
    b, _ = backend
    for i in range(3):
        await b.publish("r", ALICE, b"%d" % i, None)
    snap = await b.snapshot("r", 1)
    assert snap.epoch and snap.epoch == (await b.publish("r", ALICE, b"3", None)).epoch
    same = await b.snapshot("r", 1, snap.epoch)
    assert same.recovered and [m.seq for m in same.messages] == [2, 3, 4]
    other = await b.snapshot("r", 3, "not-this-one")
    assert not other.recovered and [m.seq for m in other.messages] == [1, 2, 3, 4]
    assert (await b.snapshot("elsewhere", None)).epoch != ""


async def test_history_is_read_in_pages_within_its_epoch(backend: Fixture) -> None:
    b, _ = backend
    for i in range(8):
        await b.publish("r", ALICE, b"%d" % i, None, f"id-{i}")
    snap = await b.snapshot("r", 0, limit=3)
    assert [m.seq for m in snap.messages] == [1, 2, 3] and snap.seq == 8
    page = await b.history("r", snap.epoch, 3, 6, 10)
    assert page is not None and [(m.seq, m.id) for m in page] == [
        (4, "id-3"),
        (5, "id-4"),
        (6, "id-5"),
    ]
    assert await b.history("r", snap.epoch, 6, 8, 1) == (await b.snapshot("r", 6, limit=1)).messages
    assert await b.history("r", "another-epoch", 0, 8, 10) is None


async def test_a_repeat_after_the_original_left_history_still_is_not_published(
    backend: Fixture,
) -> None:
    b, _ = backend
    await b.publish("r", ALICE, b'"first"', None, "early")
    for _ in range(HISTORY * 30):  # far past the bound, also for approximate trimming
        await b.publish("r", BOB, b"0", None)
    again = await b.publish("r", ALICE, b'"first"', "r", "early")
    assert again.seq == 1 and again.duplicate is not None
    # History no longer has it: the copy carries this publish's data (an id names one message).
    assert (again.duplicate.data, again.duplicate.id) == (b'"first"', "early")
    assert (await b.snapshot("r", None)).seq == HISTORY * 30 + 1


async def test_a_close_holds_until_the_room_is_opened(backend: Fixture) -> None:
    b, events = backend
    await b.subscribe("r")
    assert await b.refusal("r", "alice") is None
    await b.control("r", "close", None)
    await events.until(lambda evs: Control("r", "close", None) in evs)
    assert await b.refusal("r", "alice") == CLOSED
    assert await b.refusal("r", "bob") == CLOSED
    assert await b.refusal("other", "alice") is None
    with pytest.raises(ItemClosed):
        await b.publish("r", ALICE, b"1", None, "an-id")  # nothing published, id unspent
    await b.control("r", "open", None)
    assert await b.refusal("r", "alice") is None
    assert (await b.publish("r", ALICE, b"1", None, "an-id")).duplicate is None
    await b.publish("r", ALICE, b"0", None)  # a marker: "open" was fanned out to nobody
    await events.until(lambda evs: isinstance(evs[-1], Message))
    assert [e for e in events.events if isinstance(e, Control)] == [Control("r", "close", None)]


async def test_a_kick_with_a_ban_holds_for_its_time_and_only_for_its_user(
    backend: Fixture,
) -> None:
    b, events = backend
    await b.subscribe("r")
    await b.control("r", "kick", "bob")  # no ban: the kick alone
    assert await b.refusal("r", "bob") is None
    await b.control("r", "kick", "alice", ban_s=0.5)
    await events.until(lambda evs: Control("r", "kick", "alice") in evs)
    assert await b.refusal("r", "alice") == BANNED
    assert await b.refusal("r", "bob") is None
    assert await b.refusal("other", "alice") is None

    async def lifted() -> None:
        while await b.refusal("r", "alice") is not None:
            await asyncio.sleep(0.05)  # polling a deadline, bounded below

    await asyncio.wait_for(lifted(), 5)


async def test_a_message_bigger_than_a_notify_arrives_whole_and_in_order(
    backend: Fixture,
) -> None:
    """PostgreSQL's NOTIFY stops at 8,000 bytes: larger messages go by reference."""
    b, events = backend
    await b.subscribe("r")
    big = b'"' + "é".encode() * 6000 + b'"'  # 12 KB
    for data in (b"1", big, b"3"):
        await b.publish("r", ALICE, data, None)
    await events.count(3)
    assert [(e.seq, e.data) for e in events.events if isinstance(e, Message)] == [
        (1, b"1"),
        (2, big),
        (3, b"3"),
    ]
