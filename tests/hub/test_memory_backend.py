"""What only the memory backend does: forgetting idle rooms and old publish ids (Redis
expires keys), and its epochs."""

from itemrooms.api.hub.backends.base import Sender
from itemrooms.api.hub.backends.memory import MemoryBackend
from tests.hub.conftest import Recorder

ALICE = Sender("alice", "c_a")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_idle_rooms_forget_their_history_after_the_ttl() -> None:
    clock = Clock()
    backend = MemoryBackend(history_size=10, history_ttl_s=60, clock=clock)
    await backend.start(Recorder())
    await backend.publish("idle", ALICE, b"1", None)
    await backend.publish("occupied", ALICE, b"1", None)
    await backend.join("occupied", ALICE)
    await backend.publish("watched", ALICE, b"1", None)
    await backend.subscribe("watched")
    clock.now += 59
    assert backend.sweep() == 0
    clock.now += 2
    assert backend.sweep() == 1
    assert (await backend.snapshot("idle", 0)).seq == 0
    assert (await backend.snapshot("occupied", 0)).seq == 1
    assert (await backend.snapshot("watched", 0)).seq == 1
    await backend.stop()


async def test_activity_keeps_a_room() -> None:
    clock = Clock()
    backend = MemoryBackend(history_size=10, history_ttl_s=60, clock=clock)
    await backend.start(Recorder())
    await backend.publish("r", ALICE, b"1", None)
    clock.now += 50
    await backend.publish("r", ALICE, b"2", None)
    clock.now += 50
    assert backend.sweep() == 0
    assert [m.seq for m in (await backend.snapshot("r", 0)).messages] == [1, 2]
    await backend.stop()


async def test_history_is_not_tracked_by_the_garbage_collector() -> None:
    """Hundreds of thousands of stored messages must not lengthen full collections."""
    import gc

    backend = MemoryBackend(history_size=10)
    await backend.start(Recorder())
    await backend.publish("r", ALICE, b'{"n":1}', "ref")
    gc.collect()
    stored = backend._rooms["r"].history[0]
    assert not gc.is_tracked(stored)
    [message] = (await backend.snapshot("r", 0)).messages
    assert (message.seq, message.sender, message.data, message.ref) == (1, ALICE, b'{"n":1}', None)


async def test_a_publish_id_is_forgotten_after_the_dedup_window() -> None:
    clock = Clock()
    backend = MemoryBackend(history_size=10, dedup_s=300, clock=clock)
    await backend.start(Recorder())
    assert (await backend.publish("r", ALICE, b"1", None, "m")).seq == 1
    clock.now += 299
    assert (await backend.publish("r", ALICE, b"1", None, "m")).duplicate is not None
    clock.now += 2
    again = await backend.publish("r", ALICE, b"1", None, "m")
    assert (again.seq, again.duplicate) == (2, None)
    await backend.stop()


async def test_each_process_start_and_each_forgotten_room_is_a_new_epoch() -> None:
    clock = Clock()
    one, two = (MemoryBackend(history_size=10, history_ttl_s=60, clock=clock) for _ in range(2))
    await one.start(Recorder())
    await two.start(Recorder())
    first = await one.publish("r", ALICE, b"1", None)
    assert first.epoch != (await two.publish("r", ALICE, b"1", None)).epoch
    # An idle room is forgotten, seq and all: its seq restarts at 1 under a new epoch,
    # never under the old one.
    clock.now += 61
    assert one.sweep() == 1
    again = await one.publish("r", ALICE, b"1", None)
    assert again.seq == 1 and again.epoch != first.epoch
    await one.stop()
    await two.stop()


async def test_a_forgotten_room_that_never_had_a_message_keeps_its_epoch() -> None:
    backend = MemoryBackend(history_size=10)
    await backend.start(Recorder())
    await backend.subscribe("empty")
    await backend.join("empty", ALICE)
    before = await backend.snapshot("empty", None)
    await backend.leave("empty", ALICE)
    await backend.unsubscribe("empty")  # forgotten: nobody in it, nothing in it
    after = await backend.snapshot("empty", 0, before.epoch)
    assert (after.epoch, after.recovered, after.seq) == (before.epoch, True, 0)
    await backend.stop()
