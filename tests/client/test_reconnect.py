"""itemrooms.api.client's ``reconnect=True`` against a scripted server: it resumes with since and
epoch, settles what a lost connection left unanswered exactly once (from the replay, or
by sending the same id again), surfaces a new epoch as ``recovered: false``, and stops
for good on a close no retry can fix."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from itemrooms.api.client import PublishRefused, Room, RoomClosed, connect
from tests.client.fake_server import WAIT, FakeServer, message_frame, welcome_frame

# A backoff far longer than any wait here: a test that passes did not wait for one.
NO_HURRY = {"reconnect_delay": 1000.0, "max_reconnect_delay": 1000.0}
QUICK = {"reconnect_delay": 0.01, "max_reconnect_delay": 0.05}


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    async with FakeServer().running() as server:
        yield server


def joined(fake: FakeServer, **options: Any) -> Any:
    return connect(fake.url, token="t", proxy=None, reconnect=True, **options)


def answer(publish: dict[str, Any], seq: int, **fields: Any) -> dict[str, Any]:
    return message_frame(seq, publish["data"], id=publish["id"], ref=publish["ref"], **fields)


async def frames(room: Room, count: int) -> list[dict[str, Any]]:
    return [await room.receive(timeout=WAIT) for _ in range(count)]


async def test_it_resumes_with_since_and_epoch_and_drops_what_it_saw(fake: FakeServer) -> None:
    fake.welcomes = [welcome_frame(2, epoch="e1"), welcome_frame(4, epoch="e1")]
    async with joined(fake, **QUICK) as room:
        assert (room.seq, room.epoch) == (2, "e1")
        one = await fake.accept()
        await one.send(message_frame(3, "three", user="bob"))
        assert (await room.receive(timeout=WAIT))["seq"] == 3
        one.cut()
        two = await fake.accept()
        assert two.query == {"since": "3", "epoch": "e1"}
        await two.send(message_frame(3, "three", user="bob"))  # already seen: dropped
        await two.send(message_frame(4, "four", user="bob"))
        welcome, message = await frames(room, 2)
        assert (welcome["type"], welcome["recovered"]) == ("welcome", True)
        assert (message["seq"], message["data"]) == (4, "four")
        assert (room.seq, room.epoch, room.recovered) == (4, "e1", True)


async def test_an_unanswered_publish_is_sent_again_with_its_id_and_settled_once(
    fake: FakeServer,
) -> None:
    fake.welcomes = [welcome_frame(0), welcome_frame(1)]
    async with joined(fake, **QUICK) as room:
        one = await fake.accept()
        send = asyncio.create_task(room.publish("hi"))
        publish = await one.recv_publish()
        one.cut()  # the server may or may not have stored it: here it had, as seq 1
        two = await fake.accept()
        assert await two.recv_publish() == publish  # same id, same ref
        await two.send(answer(publish, 1, duplicate=True))
        sent = await asyncio.wait_for(send, WAIT)
        assert (sent["seq"], sent["id"]) == (1, publish["id"])
        # The duplicate copy is no message of its own: the next one yielded is seq 2.
        await two.send(message_frame(2, "next", user="bob"))
        welcome, message = await frames(room, 2)
        assert welcome["type"] == "welcome" and message["seq"] == 2


async def test_a_replayed_copy_carrying_the_id_settles_the_publish(fake: FakeServer) -> None:
    fake.welcomes = [welcome_frame(0), welcome_frame(1)]
    async with joined(fake, **QUICK) as room:
        one = await fake.accept()
        send = asyncio.create_task(room.publish("hi"))
        publish = await one.recv_publish()
        await one.close(1001, "going_away")
        two = await fake.accept()
        assert two.query["since"] == "0"
        # The replay (no ref: that is only in a live copy) settles it...
        await two.send(message_frame(1, "hi", id=publish["id"]))
        sent = await asyncio.wait_for(send, WAIT)
        assert sent["seq"] == 1 and "duplicate" not in sent
        # ...and the id sent again meanwhile is answered as a duplicate, ignored.
        assert await two.recv_publish() == publish
        await two.send(answer(publish, 1, duplicate=True))
        await two.send(message_frame(2, "next", user="bob"))
        welcome, replayed, live = await frames(room, 3)
        assert [replayed["seq"], live["seq"]] == [1, 2]


async def test_another_users_message_with_the_same_id_settles_nothing(fake: FakeServer) -> None:
    fake.welcomes = [welcome_frame(0), welcome_frame(1)]
    async with joined(fake, **QUICK) as room:
        one = await fake.accept()
        send = asyncio.create_task(room.publish("mine", id="shared-id"))
        publish = await one.recv_publish()
        one.cut()
        two = await fake.accept()
        await two.send(message_frame(1, "bob's", user="bob", id="shared-id"))
        assert await two.recv_publish() == publish
        await two.send(answer(publish, 2))
        assert (await asyncio.wait_for(send, WAIT))["seq"] == 2


async def test_a_publish_made_while_reconnecting_goes_out_after_the_welcome(
    fake: FakeServer,
) -> None:
    fake.welcomes = [welcome_frame(0), welcome_frame(0)]
    async with joined(fake, **QUICK) as room:
        one = await fake.accept()
        fake.admit.clear()  # the next connection waits for its welcome
        one.cut()
        await wait_disconnected(room)
        sends = [asyncio.create_task(room.publish(n)) for n in range(2)]
        fake.admit.set()
        two = await fake.accept()
        for seq in (1, 2):
            publish = await two.recv_publish()
            assert publish["data"] == seq - 1  # in the order they were made
            await two.send(answer(publish, seq))
        assert [(await s)["seq"] for s in sends] == [1, 2]


async def test_publishes_wait_for_a_connection_at_most_their_timeout(fake: FakeServer) -> None:
    async with joined(fake, **NO_HURRY) as room:
        one = await fake.accept()
        one.cut()
        await wait_disconnected(room)
        with pytest.raises(PublishRefused) as refused:
            await room.publish("x", timeout=0.05)
        assert refused.value.code == "not_connected"


async def wait_disconnected(room: Room) -> None:
    async def poll() -> None:
        while room.connected:
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), WAIT)


async def test_epoch_changed_reconnects_at_once_and_says_recovered_false(
    fake: FakeServer,
) -> None:
    fake.welcomes = [welcome_frame(5, epoch="e1"), welcome_frame(6, epoch="e2", recovered=False)]
    async with joined(fake, **NO_HURRY) as room:
        one = await fake.accept()
        await one.close(1012, "epoch_changed")
        two = await fake.accept()  # at once: the backoff would take far longer
        assert two.query == {"since": "5", "epoch": "e1"}
        # The new sequence, from what history holds of it: 4 and 5 are other messages
        # than the 4 and 5 of the old one, so they are new too.
        for seq in (4, 5, 6):
            await two.send(message_frame(seq, f"new {seq}", user="bob"))
        welcome, *replayed = await frames(room, 4)
        assert (welcome["type"], welcome["epoch"], welcome["recovered"]) == ("welcome", "e2", False)
        assert [(m["seq"], m["data"]) for m in replayed] == [
            (4, "new 4"),
            (5, "new 5"),
            (6, "new 6"),
        ]
        assert (room.seq, room.epoch, room.recovered) == (6, "e2", False)


async def test_a_new_epoch_in_a_welcome_is_recovered_false_even_if_it_says_true(
    fake: FakeServer,
) -> None:
    fake.welcomes = [welcome_frame(5, epoch="e1"), welcome_frame(7, epoch="e2")]
    async with joined(fake, **QUICK) as room:
        (await fake.accept()).cut()
        two = await fake.accept()
        welcome = await room.receive(timeout=WAIT)
        assert (welcome["epoch"], welcome["recovered"]) == ("e2", False)
        assert (room.seq, room.recovered) == (0, False)
        await two.send(message_frame(5, "another five", user="bob"))
        assert (await room.receive(timeout=WAIT))["data"] == "another five"


async def test_a_publish_older_than_the_dedup_window_is_settled_by_the_replay_only(
    fake: FakeServer,
) -> None:
    # Past the window the server may have forgotten the id: sending it again could
    # publish it twice. The replay tells: here it holds the message.
    fake.welcomes = [welcome_frame(0), welcome_frame(1)]
    async with joined(fake, dedup_window=0, **QUICK) as room:
        one = await fake.accept()
        send = asyncio.create_task(room.publish("old"))
        publish = await one.recv_publish()
        one.cut()
        two = await fake.accept()
        await two.send(message_frame(1, "old", id=publish["id"]))
        assert (await asyncio.wait_for(send, WAIT))["seq"] == 1
        later = asyncio.create_task(room.publish("new"))
        publish = await two.recv_publish()
        assert publish["data"] == "new"  # the old one was not sent again
        await two.send(answer(publish, 2))
        assert (await asyncio.wait_for(later, WAIT))["seq"] == 2


async def test_past_the_window_a_complete_replay_without_it_means_send_it_again(
    fake: FakeServer,
) -> None:
    fake.welcomes = [welcome_frame(0), welcome_frame(1)]
    async with joined(fake, dedup_window=0, **QUICK) as room:
        one = await fake.accept()
        send = asyncio.create_task(room.publish("lost"))
        publish = await one.recv_publish()
        one.cut()
        two = await fake.accept()
        await two.send(message_frame(1, "someone else's", user="bob"))
        assert await two.recv_publish() == publish  # after the replay: never stored
        await two.send(answer(publish, 2))
        assert (await asyncio.wait_for(send, WAIT))["seq"] == 2


async def test_past_the_window_an_incomplete_replay_cannot_tell(fake: FakeServer) -> None:
    fake.welcomes = [welcome_frame(0), welcome_frame(9, recovered=False)]
    async with joined(fake, dedup_window=0, **QUICK) as room:
        one = await fake.accept()
        send = asyncio.create_task(room.publish("lost?"))
        await one.recv_publish()
        one.cut()
        two = await fake.accept()
        await two.send(message_frame(9, "what history holds", user="bob"))
        with pytest.raises(PublishRefused) as refused:
            await asyncio.wait_for(send, WAIT)
        assert refused.value.code == "outcome_unknown"


async def test_a_fatal_close_ends_the_room_and_its_publishes(fake: FakeServer) -> None:
    async with joined(fake, **QUICK) as room:
        one = await fake.accept()
        send = asyncio.create_task(room.publish("x"))
        await one.recv_publish()
        await one.close(1008, "item_closed")
        with pytest.raises(RoomClosed) as closed:
            await asyncio.wait_for(send, WAIT)
        assert (closed.value.code, closed.value.reason) == (1008, "item_closed")
        with pytest.raises(RoomClosed):
            await room.receive(timeout=WAIT)
        assert room.closed and room.close_reason == "item_closed"


async def test_a_refused_reconnection_for_good_ends_the_room(fake: FakeServer) -> None:
    async with joined(fake, **QUICK) as room:
        (await fake.accept()).cut()
        again = await fake.accept()
        await again.close(1008, "forbidden")  # e.g. the user lost access meanwhile
        with pytest.raises(RoomClosed) as closed:
            await room.receive("message", timeout=WAIT)
        assert closed.value.reason == "forbidden"


async def test_a_1009_refuses_the_biggest_publish_and_sends_the_others_again(
    fake: FakeServer,
) -> None:
    fake.welcomes = [welcome_frame(0), welcome_frame(0)]
    async with joined(fake, **QUICK) as room:
        one = await fake.accept()
        small = asyncio.create_task(room.publish("s"))
        big = asyncio.create_task(room.publish("b" * 5000))
        await one.recv_publish()
        await one.recv_publish()
        await one.close(1009, "message_too_big")
        with pytest.raises(PublishRefused) as refused:
            await asyncio.wait_for(big, WAIT)
        assert refused.value.code == "message_too_big"
        two = await fake.accept()
        publish = await two.recv_publish()
        assert publish["data"] == "s"
        await two.send(answer(publish, 1))
        assert (await asyncio.wait_for(small, WAIT))["seq"] == 1


async def test_leaving_while_reconnecting_ends_iteration_quietly(fake: FakeServer) -> None:
    async with joined(fake, **NO_HURRY) as room:
        (await fake.accept()).cut()
        await wait_disconnected(room)
        send = asyncio.create_task(room.publish("never sent"))
        await room.close()
        assert [frame async for frame in room] == []
        with pytest.raises(RoomClosed):
            await asyncio.wait_for(send, WAIT)
