"""Members written through a DirectSocket (what api/ws_protocol.py offers): straight
to the transport while it keeps up, one write per member per loop turn, frames
framed once per room, a queue and a writer task only while backpressured."""

import asyncio
import json
from typing import Any

from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from itemrooms.api.close_codes import SLOW_CONSUMER
from itemrooms.api.hub.backends.base import Sender
from itemrooms.api.hub.backends.memory import MemoryBackend
from itemrooms.api.hub.hub import Hub
from itemrooms.api.hub.member import Member
from itemrooms.auth.tokens import Claims
from tests.hub.test_hub import IMMEDIATE


class FakeTransport:
    """A DirectSocket that records writes; ``writable`` plays the kernel's buffer."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.asgi: list[dict[str, Any]] = []
        self.open = True
        self.closed: tuple[int, str] | None = None
        self._writable = asyncio.Event()
        self._writable.set()

    def direct_writable(self) -> bool:
        return self.open and self._writable.is_set()

    def direct_write(self, data: bytes) -> None:
        if self.open:
            self.writes.append(data)

    async def direct_drained(self) -> None:
        await self._writable.wait()

    def direct_close(self, code: int, reason: str) -> None:
        if self.open and self.closed is None:
            self.closed = (code, reason)

    def backpressure(self, on: bool) -> None:
        if on:
            self._writable.clear()
        else:
            self._writable.set()

    async def send(self, message: dict[str, Any]) -> None:
        """The ASGI send: only closes should come this way."""
        self.asgi.append(message)

    def frames(self) -> list[dict[str, Any]]:
        """Every frame written so far, parsed as a client would."""
        reader = StreamReader()
        reader.feed_data(b"".join(self.writes))
        reader.feed_eof()
        parsed = []
        parser = Frame.parse(reader.read_exact, mask=False)
        while True:
            try:
                next(parser)
            except StopIteration as done:
                frame: Frame = done.value
            except EOFError:
                return parsed
            assert frame.opcode == Opcode.TEXT and frame.fin
            parsed.append(json.loads(frame.data))
            parser = Frame.parse(reader.read_exact, mask=False)


def make_member(hub: Hub, user: str, socket: FakeTransport, limit: int = 100) -> Member:
    claims = Claims(sub=user, exp=2**37, scope=frozenset({"items:read", "items:write"}))
    sender = Sender(user, f"c_{user}")
    return Member(sender, claims, True, socket.send, limit, direct=socket, batch=hub.flush_batch)


async def fast_and_slow(
    hub: Hub, slow_limit: int = 100
) -> tuple[Member, FakeTransport, Member, FakeTransport]:
    """Two members in room "r": one that keeps up, one whose socket we will stall."""
    fast_socket, slow_socket = FakeTransport(), FakeTransport()
    fast = make_member(hub, "fast", fast_socket)
    slow = make_member(hub, "slow", slow_socket, limit=slow_limit)
    await hub.join("r", fast, None)
    await hub.join("r", slow, None)
    return fast, fast_socket, slow, slow_socket


async def a_turn() -> None:
    await asyncio.sleep(0)  # one loop turn: the flush scheduled by call_soon runs


def seqs(socket: FakeTransport) -> list[int]:
    return [f["seq"] for f in socket.frames() if f["type"] == "message"]


async def test_a_burst_is_one_write_per_member_and_needs_no_task() -> None:
    hub = Hub(MemoryBackend())
    await hub.start()
    sockets = [FakeTransport() for _ in range(20)]
    members = [make_member(hub, f"u{i}", s) for i, s in enumerate(sockets)]
    for member in members:
        await hub.join("r", member, None)
    await a_turn()
    tasks = len(asyncio.all_tasks())
    for socket in sockets:
        socket.writes.clear()
    for i in range(10):  # publish never yields with the memory backend: one loop turn
        await hub.publish("r", members[0].sender, str(i).encode(), None)
    assert len(asyncio.all_tasks()) == tasks  # no writer task was started
    assert all(socket.writes == [] for socket in sockets)  # written at the end of the turn
    await a_turn()
    for socket in sockets:
        assert len(socket.writes) == 1
        assert seqs(socket) == list(range(1, 11))
    # The frame bytes are shared: built once per message, not once per member.
    assert sockets[1].writes[0] == sockets[2].writes[0]
    assert all(member.idle for member in members)
    await hub.stop()


async def test_a_backpressured_member_queues_in_order_then_writes_directly_again() -> None:
    hub = Hub(MemoryBackend())
    await hub.start()
    fast, fast_socket, slow, slow_socket = await fast_and_slow(hub)
    await hub.publish("r", fast.sender, b"1", None)  # pending for slow: not yet written
    slow_socket.backpressure(True)
    await hub.publish("r", fast.sender, b"2", None)  # queued behind it
    await a_turn()
    assert not slow.idle  # a writer waits for the socket to drain
    assert seqs(slow_socket) == []
    slow_socket.backpressure(False)
    async with asyncio.timeout(5):
        while not slow.idle:
            await a_turn()
    tasks = len(asyncio.all_tasks())
    await hub.publish("r", fast.sender, b"3", None)
    assert len(asyncio.all_tasks()) == tasks  # direct again: no writer task
    await a_turn()
    assert seqs(slow_socket) == [1, 2, 3]
    assert seqs(fast_socket) == [1, 2, 3]
    await hub.stop()


async def test_a_member_that_stays_backpressured_is_closed_and_the_room_goes_on() -> None:
    hub = Hub(MemoryBackend(), presence=IMMEDIATE)
    await hub.start()
    fast, fast_socket, slow, slow_socket = await fast_and_slow(hub, slow_limit=3)
    await a_turn()
    slow_socket.backpressure(True)
    for i in range(10):
        await hub.publish("r", fast.sender, str(i).encode(), None)
        await a_turn()  # the writer is waiting for the socket: slow, not merely busy
    assert slow.close_with == SLOW_CONSUMER
    assert seqs(fast_socket) == list(range(1, 11))
    leaves = [f for f in fast_socket.frames() if f.get("event") == "leave"]
    assert [f["client_id"] for f in leaves] == ["c_slow"]
    # The close went out at once, behind what the socket already held: not after a
    # drain that may never come.
    assert slow_socket.closed == (1013, "slow_consumer")
    async with asyncio.timeout(5):
        await slow.closed(5)
    assert slow.idle and slow_socket.asgi == []
    await hub.stop()


async def test_frames_of_a_closed_socket_are_dropped_without_error() -> None:
    hub = Hub(MemoryBackend())
    await hub.start()
    a_socket, b_socket = FakeTransport(), FakeTransport()
    a, b = make_member(hub, "a", a_socket), make_member(hub, "b", b_socket)
    await hub.join("r", a, None)
    await hub.join("r", b, None)
    await a_turn()
    b_socket.open = False  # the client vanished; its reader has not noticed yet
    await hub.publish("r", a.sender, b"1", None)
    await a_turn()
    assert seqs(a_socket) == [1]
    async with asyncio.timeout(5):
        while not b.idle:
            await a_turn()
    await b.stop()
    await hub.stop()
