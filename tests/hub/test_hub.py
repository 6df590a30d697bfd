"""The hub in one process, with a backend that yields at every call (as a networked
backend does), so joins, publishes and leaves interleave."""

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from itemrooms.api.close_codes import SLOW_CONSUMER
from itemrooms.api.hub import hub as hub_module
from itemrooms.api.hub.backends.base import BackendUnavailable, Published, Sender, Snapshot
from itemrooms.api.hub.backends.memory import MemoryBackend
from itemrooms.api.hub.hub import Hub
from itemrooms.api.hub.member import BURST_CAP_FACTOR, Member
from itemrooms.api.hub.presence import PresencePolicy
from itemrooms.auth.tokens import Claims
from tests.hub.conftest import present


class YieldingBackend(MemoryBackend):
    """The memory backend, but every call gives the event loop a turn first."""

    async def subscribe(self, item_id: str) -> tuple[Sender, ...]:
        await asyncio.sleep(0)
        return await super().subscribe(item_id)

    async def unsubscribe(self, item_id: str) -> None:
        await asyncio.sleep(0)
        await super().unsubscribe(item_id)

    async def publish(
        self, item_id: str, sender: Sender, data: bytes, ref: str | None, id: str | None = None
    ) -> Published:
        await asyncio.sleep(0)
        return await super().publish(item_id, sender, data, ref, id)

    async def join(self, item_id: str, member: Sender) -> None:
        await asyncio.sleep(0)
        await super().join(item_id, member)

    async def leave(self, item_id: str, member: Sender) -> None:
        await asyncio.sleep(0)
        await super().leave(item_id, member)

    async def snapshot(
        self, item_id: str, since: int | None, epoch: str | None = None, limit: int = 100
    ) -> Snapshot:
        await asyncio.sleep(0)
        return await super().snapshot(item_id, since, epoch, limit)


class FakeSocket:
    """Collects what a member's writer sends; ``stalled`` never completes a send."""

    def __init__(self, stalled: bool = False) -> None:
        self.frames: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self.stalled = stalled
        self.changed = asyncio.Condition()

    async def send(self, message: dict[str, Any]) -> None:
        if self.stalled:
            await asyncio.Event().wait()
        if message["type"] == "websocket.close":
            self.closed = (message["code"], message["reason"])
        else:
            self.frames.append(json.loads(message["text"]))
        async with self.changed:
            self.changed.notify_all()

    async def until(
        self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 10
    ) -> None:
        """Wait, bounded, until the frames sent so far satisfy ``done``."""
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: done(self.frames)), timeout)


class Client:
    def __init__(
        self,
        hub: Hub,
        user: str,
        limit: int = 10_000,
        stalled: bool = False,
        client_id: str | None = None,
    ) -> None:
        self.socket = FakeSocket(stalled)
        claims = Claims(sub=user, exp=2**37, scope=frozenset({"items:read", "items:write"}))
        sender = Sender(user, client_id or f"c_{user}")
        self.member = Member(sender, claims, True, self.socket.send, limit)

    async def settle(self) -> None:
        """Wait (bounded) until the writer has sent everything queued so far."""
        async with asyncio.timeout(5):
            while not self.member.idle:
                await asyncio.sleep(0)  # a turn of the loop for the writer; not a timed wait

    async def stop(self) -> None:
        await self.member.stop()


# Every presence change sent at once (v1's behaviour): these tests are about joins,
# leaves and order; batching has its own (tests/hub/test_presence.py).
IMMEDIATE = PresencePolicy(interval_s=0)


async def make_hub() -> Hub:
    hub = Hub(YieldingBackend(history_size=1000), presence=IMMEDIATE)
    await hub.start()
    return hub


async def test_a_join_during_a_publish_storm_sees_every_later_message_once() -> None:
    hub = await make_hub()
    publisher = Client(hub, "pub")
    await hub.join("r", publisher.member, None)

    async def storm() -> None:
        for i in range(200):
            await hub.publish("r", publisher.member.sender, str(i).encode(), None)

    joiners = [Client(hub, f"j{i}") for i in range(10)]
    since_values = [None, 0, None, 5, None, 0, None, 50, None, 0]
    await asyncio.gather(
        storm(), *(hub.join("r", c.member, s) for c, s in zip(joiners, since_values, strict=True))
    )
    for client in [publisher, *joiners]:
        await client.settle()
    for client, since in zip(joiners, since_values, strict=True):
        welcome, *rest = client.socket.frames
        assert welcome["type"] == "welcome"
        seqs = [f["seq"] for f in rest if f["type"] == "message"]
        if since is None:
            first = welcome["seq"] + 1
        else:  # a since the room never reached replays all history
            first = since + 1 if since <= welcome["seq"] else 1
        assert seqs == list(range(first, 201)), (since, welcome["seq"], seqs[:5])
    for client in [publisher, *joiners]:
        await client.stop()
    await hub.stop()


async def test_concurrent_joins_through_the_hub_give_everyone_the_same_room() -> None:
    hub = await make_hub()
    clients = [Client(hub, f"u{i}") for i in range(40)]
    await asyncio.gather(*(hub.join("r", c.member, None) for c in clients))
    for client in clients:
        await client.settle()
        welcome, *events = client.socket.frames
        known = {m["client_id"] for m in welcome["members"]}
        for event in events:
            assert event["type"] == "presence" and event["event"] == "join"
            assert event["client_id"] not in known and event["client_id"] != client.member.client_id
            known.add(event["client_id"])
        assert known == {c.member.client_id for c in clients} - {client.member.client_id}
        await client.stop()
    await hub.stop()


async def ten_messages_past_a_stalled_member() -> tuple[Hub, Client, Client]:
    """A room with one reading member and one that never reads (queue limit 3)."""
    hub = await make_hub()
    fast, slow = Client(hub, "fast"), Client(hub, "slow", limit=3, stalled=True)
    await hub.join("r", fast.member, None)
    await hub.join("r", slow.member, None)
    for i in range(10):
        await hub.publish("r", fast.member.sender, str(i).encode(), None)
    return hub, fast, slow


async def test_a_full_queue_closes_the_member_and_tells_the_others() -> None:
    hub, fast, slow = await ten_messages_past_a_stalled_member()
    await fast.settle()
    assert slow.member.close_with == SLOW_CONSUMER
    seqs = [f["seq"] for f in fast.socket.frames if f["type"] == "message"]
    assert seqs == list(range(1, 11))
    leaves = [f for f in fast.socket.frames if f["type"] == "presence" and f["event"] == "leave"]
    assert [f["client_id"] for f in leaves] == ["c_slow"]
    assert await present(hub.backend, "r") == {"fast": 1}
    await fast.stop()
    await slow.stop()
    await hub.stop()


async def test_the_last_leave_unsubscribes_and_a_racing_join_still_gets_events() -> None:
    hub = await make_hub()
    backend = hub.backend
    assert isinstance(backend, MemoryBackend)
    a, b = Client(hub, "a"), Client(hub, "b")
    await hub.join("r", a.member, None)
    # b joins while a leaves: whichever order they interleave in, b must end up subscribed.
    await asyncio.gather(hub.leave("r", a.member), hub.join("r", b.member, None))
    await hub.publish("r", b.member.sender, b"1", "mine")
    await b.settle()
    assert [f.get("ref") for f in b.socket.frames if f["type"] == "message"] == ["mine"]
    await hub.leave("r", b.member)
    assert "r" not in backend._subscribed
    for client in (a, b):
        await client.stop()
    await hub.stop()


async def test_a_message_is_encoded_once_per_room_not_once_per_member(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real = hub_module.encode_message

    def counting(message: Any) -> str:
        calls.append(message.seq)
        return real(message)

    monkeypatch.setattr(hub_module, "encode_message", counting)
    hub = await make_hub()
    clients = [Client(hub, f"u{i}") for i in range(50)]
    for client in clients:
        await hub.join("r", client.member, None)
    await hub.publish("r", clients[0].member.sender, b"1", "ref")
    assert calls == [1]
    for client in clients:
        await client.settle()
        assert [f["seq"] for f in client.socket.frames if f["type"] == "message"] == [1]
        await client.stop()
    await hub.stop()


async def test_a_burst_beyond_the_queue_limit_evicts_nobody_who_keeps_reading() -> None:
    """Many publishes handled before any writer runs (one socket read full of them)
    must not count as every member being slow."""
    hub = Hub(MemoryBackend())  # publish never yields: the whole burst lands at once
    await hub.start()
    clients = [Client(hub, f"u{i}", limit=10) for i in range(5)]
    for client in clients:
        await hub.join("r", client.member, None)
    for i in range(50):
        await hub.publish("r", clients[0].member.sender, str(i).encode(), None)
    for client in clients:
        await client.settle()
        assert client.member.close_with is None
        assert [f["seq"] for f in client.socket.frames if f["type"] == "message"] == list(
            range(1, 51)
        )
        await client.stop()
    await hub.stop()


async def test_even_a_burst_has_a_hard_cap() -> None:
    hub = Hub(MemoryBackend())
    await hub.start()
    a, b = Client(hub, "a", limit=10), Client(hub, "b", limit=10)
    await hub.join("r", a.member, None)
    await hub.join("r", b.member, None)
    for _ in range(10 * BURST_CAP_FACTOR + 5):
        await hub.publish("r", a.member.sender, b"0", None)
    assert a.member.close_with == SLOW_CONSUMER and b.member.close_with == SLOW_CONSUMER
    for client in (a, b):
        await client.stop()
    await hub.stop()


async def test_a_resuming_client_that_does_not_read_holds_no_copy_of_history(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub = Hub(MemoryBackend(history_size=1000))
    await hub.start()
    writer = Client(hub, "w")
    await hub.join("r", writer.member, None)
    for i in range(200):
        await hub.publish("r", writer.member.sender, str(i).encode(), None)
    encoded: list[int] = []
    real = hub_module.encode_message
    monkeypatch.setattr(hub_module, "encode_message", lambda m: encoded.append(m.seq) or real(m))
    stalled = Client(hub, "s", limit=10, stalled=True)
    await hub.join("r", stalled.member, 0)
    assert len(stalled.member._queue) <= 2  # the welcome and the replay, as one item
    assert encoded == []  # nothing of the history encoded for a client that does not read
    reader = Client(hub, "reader")
    await hub.join("r", reader.member, 0)
    await reader.settle()
    seqs = [f["seq"] for f in reader.socket.frames if f["type"] == "message"]
    assert seqs == list(range(1, 201)) and encoded == list(range(1, 201))
    for client in (writer, stalled, reader):
        await client.stop()
    await hub.stop()


class ReplyInFlightBackend(MemoryBackend):
    """Reads the snapshot, then lets the loop run before returning it, as a network
    backend's reply is still in flight: events published meanwhile are newer than it."""

    async def snapshot(
        self, item_id: str, since: int | None, epoch: str | None = None, limit: int = 100
    ) -> Snapshot:
        snap = await super().snapshot(item_id, since, epoch, limit)
        for _ in range(20):
            await asyncio.sleep(0)
        return snap


async def test_events_during_a_join_are_held_back_and_delivered_once() -> None:
    hub = Hub(ReplyInFlightBackend(history_size=1000))
    await hub.start()
    publisher, joiner = Client(hub, "pub"), Client(hub, "joiner")
    await hub.join("r", publisher.member, None)

    async def publish_during_join() -> None:
        for i in range(10):
            await hub.publish("r", publisher.member.sender, str(i).encode(), None)
            await asyncio.sleep(0)

    await asyncio.gather(hub.join("r", joiner.member, None), publish_during_join())
    await joiner.settle()
    welcome, *rest = joiner.socket.frames
    seqs = [f["seq"] for f in rest if f["type"] == "message"]
    assert seqs == list(range(welcome["seq"] + 1, 11)) and welcome["seq"] < 10
    for client in (publisher, joiner):
        await client.stop()
    await hub.stop()


class ParkedUnsubscribe(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.parked = asyncio.Event()

    async def unsubscribe(self, item_id: str) -> None:
        self.parked.set()
        await self.release.wait()
        await super().unsubscribe(item_id)


async def test_a_join_that_waits_for_the_last_leave_subscribes_anew() -> None:
    backend = ParkedUnsubscribe()
    hub = Hub(backend)
    await hub.start()
    a, b = Client(hub, "a"), Client(hub, "b")
    await hub.join("r", a.member, None)
    leaving = asyncio.create_task(hub.leave("r", a.member))
    await asyncio.wait_for(backend.parked.wait(), 5)  # unsubscribe in progress
    joining = asyncio.create_task(hub.join("r", b.member, None))
    backend.release.set()
    await asyncio.wait_for(asyncio.gather(leaving, joining), 5)
    assert "r" in backend._subscribed
    await hub.publish("r", b.member.sender, b"1", "mine")
    await b.socket.until(lambda fs: any(f.get("ref") == "mine" for f in fs))
    backend.release.set()
    await hub.leave("r", b.member)
    assert hub._rooms == {} and backend._subscribed == set()
    for client in (a, b):
        await client.stop()
    await hub.stop()


class FailingSnapshot(MemoryBackend):
    async def snapshot(
        self, item_id: str, since: int | None, epoch: str | None = None, limit: int = 100
    ) -> Snapshot:
        raise BackendUnavailable("down")


async def test_a_failed_join_leaves_no_trace() -> None:
    backend = FailingSnapshot()
    hub = Hub(backend)
    await hub.start()
    client = Client(hub, "a")
    with pytest.raises(BackendUnavailable):
        await hub.join("r", client.member, None)
    assert hub._rooms == {} and backend._subscribed == set()
    assert backend._rooms.get("r") is None or backend._rooms["r"].members == {}
    await client.stop()
    await hub.stop()


async def test_closing_a_member_drops_what_was_queued() -> None:
    hub, fast, slow = await ten_messages_past_a_stalled_member()
    assert slow.member.close_with == SLOW_CONSUMER
    assert list(slow.member._queue) == [SLOW_CONSUMER]
    for client in (fast, slow):
        await client.stop()
    await hub.stop()
