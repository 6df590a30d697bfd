"""Replays (``?since=``) at the hub: read a page at a time, never cut short by a close
that keeps the queue, and never followed by the same seqs again live (issue 11's
reproductions 4, 5 and 6)."""

import asyncio
from typing import Any

import pytest

from itemrooms.api.close_codes import RATE_LIMITED
from itemrooms.api.hub.backends.base import BackendUnavailable, Event, Message, Sender
from itemrooms.api.hub.backends.memory import MemoryBackend
from itemrooms.api.hub.hub import REPLAY_PAGE, Hub
from itemrooms.api.hub.member import Member
from itemrooms.auth.tokens import Claims
from tests.hub.test_hub import Client, FakeSocket

CLAIMS = Claims(sub="r", exp=2**37, scope=frozenset({"items:read", "items:write"}))


class CountingBackend(MemoryBackend):
    """Counts what the hub reads of history."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.pages = 0
        self.read = 0

    async def history(
        self, item_id: str, epoch: str, after: int, upto: int, limit: int
    ) -> tuple[Message, ...] | None:
        page = await super().history(item_id, epoch, after, upto, limit)
        self.pages += 1
        self.read += len(page or ())
        return page


async def filled(backend: MemoryBackend, count: int) -> tuple[Hub, Client]:
    hub = Hub(backend)
    await hub.start()
    writer = Client(hub, "w")
    await hub.join("r", writer.member, None)
    for i in range(count):
        await hub.publish("r", writer.member.sender, str(i).encode(), None)
    return hub, writer


def seqs(socket: FakeSocket) -> list[int]:
    return [f["seq"] for f in socket.frames if f["type"] == "message"]


async def test_a_resuming_client_that_does_not_read_holds_one_page_of_history() -> None:
    backend = CountingBackend(history_size=1000)
    hub, writer = await filled(backend, 1000)
    stalled = Client(hub, "s", stalled=True)
    await hub.join("r", stalled.member, 0)
    assert backend.pages == 0  # nothing read beyond the snapshot's first page
    reader = Client(hub, "reader")
    await hub.join("r", reader.member, 0)
    await reader.settle()
    assert seqs(reader.socket) == list(range(1, 1001))
    # The rest came a page at a time, as the writer sent it.
    assert backend.pages == 1000 // REPLAY_PAGE - 1 and backend.read == 1000 - REPLAY_PAGE
    for client in (writer, stalled, reader):
        await client.stop()
    await hub.stop()


class GatedSocket(FakeSocket):
    """Sends ``open_for`` frames, then waits until ``gate`` is set."""

    def __init__(self, open_for: int) -> None:
        super().__init__()
        self.open_for = open_for
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        if len(self.frames) >= self.open_for and not self.gate.is_set():
            self.waiting.set()
            await self.gate.wait()
        await super().send(message)


async def test_a_close_that_keeps_the_queue_sends_the_whole_replay_first() -> None:
    hub, writer = await filled(MemoryBackend(history_size=1000), 300)
    socket = GatedSocket(open_for=50)
    member = Member(Sender("r", "c_r"), CLAIMS, True, socket.send, 10_000)
    await hub.join("r", member, 0)
    await asyncio.wait_for(socket.waiting.wait(), 5)  # mid-replay
    for i in range(5):  # newer messages queue behind the replay
        await hub.publish("r", writer.member.sender, b"%d" % (300 + i), None)
    hub.evict("r", member, RATE_LIMITED, drop_queued=False)
    socket.gate.set()
    await socket.until(lambda _: socket.closed is not None)
    assert socket.closed == tuple(RATE_LIMITED)
    # Cut short, the replay would leave a gap below the client's last seq that no
    # resume could fill.
    assert seqs(socket) == list(range(1, 306))
    await member.stop()
    await writer.stop()
    await hub.stop()


class LaggingBackend(MemoryBackend):
    """Holds its events back while ``lagging``, as a Redis pub/sub connection that is
    reconnecting does: the snapshot (another connection) is ahead of the live stream."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.lagging = False
        self.late: list[Event] = []

    def _emit(self, event: Event) -> None:
        if self.lagging:
            self.late.append(event)
        else:
            super()._emit(event)

    def catch_up(self) -> None:
        self.lagging = False
        for event in self.late:
            super()._emit(event)


async def test_a_member_that_resumed_ahead_of_the_live_stream_gets_each_seq_once() -> None:
    backend = LaggingBackend(history_size=1000)
    hub, writer = await filled(backend, 2)
    backend.lagging = True
    for i in range(3):
        await hub.publish("r", writer.member.sender, b"%d" % i, None)
    resumed = Client(hub, "resumed")
    await hub.join("r", resumed.member, 2)  # its replay: 3, 4, 5, from history
    backend.catch_up()  # 3, 4, 5 arrive live too
    await hub.publish("r", writer.member.sender, b"6", None)
    await resumed.socket.until(lambda frames: any(f.get("seq") == 6 for f in frames))
    assert seqs(resumed.socket) == [3, 4, 5, 6]
    await hub.publish("r", writer.member.sender, b"7", None)
    await resumed.socket.until(lambda frames: any(f.get("seq") == 7 for f in frames))
    assert seqs(resumed.socket) == [3, 4, 5, 6, 7]
    for client in (writer, resumed):
        await client.stop()
    await hub.stop()


async def test_a_replay_that_history_moved_past_closes_so_the_client_resumes() -> None:
    hub, writer = await filled(MemoryBackend(history_size=REPLAY_PAGE * 2), REPLAY_PAGE * 2)
    socket = GatedSocket(open_for=10)
    member = Member(Sender("r", "c_r"), CLAIMS, True, socket.send, 10_000)
    await hub.join("r", member, 0)
    await asyncio.wait_for(socket.waiting.wait(), 5)
    for _ in range(REPLAY_PAGE * 2):  # the rest of its replay leaves history meanwhile
        await hub.publish("r", writer.member.sender, b"0", None)
    socket.gate.set()
    await socket.until(lambda _: socket.closed is not None)
    # Rather than skip what is gone: closed, it resumes from its last seq and learns
    # recovered: false.
    assert socket.closed == (1013, "slow_consumer")
    assert seqs(socket) == list(range(1, REPLAY_PAGE + 1))
    await member.stop()
    await writer.stop()
    await hub.stop()


class LostBackend(MemoryBackend):
    """History that, after the snapshot, is another epoch's or cannot be read."""

    def __init__(self, failure: BaseException | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.failure = failure

    async def history(
        self, item_id: str, epoch: str, after: int, upto: int, limit: int
    ) -> tuple[Message, ...] | None:
        if self.failure is not None:
            raise self.failure
        return None


@pytest.mark.parametrize(
    ("failure", "close"),
    [(None, (1012, "epoch_changed")), (BackendUnavailable("down"), (1011, "internal_error"))],
)
async def test_a_replay_whose_history_is_lost_midway_closes_with_the_reason(
    failure: BaseException | None, close: tuple[int, str]
) -> None:
    hub, writer = await filled(LostBackend(failure, history_size=1000), REPLAY_PAGE * 2)
    resumed = Client(hub, "resumed")
    await hub.join("r", resumed.member, 0)
    await resumed.socket.until(lambda _: resumed.socket.closed is not None)
    assert resumed.socket.closed == close
    # What it got is a prefix it can resume from: nothing after the cut.
    assert seqs(resumed.socket) == list(range(1, REPLAY_PAGE + 1))
    for client in (writer, resumed):
        await client.stop()
    await hub.stop()
