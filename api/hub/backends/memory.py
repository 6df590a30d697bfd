"""In-process backend: the default, and the reference the contract tests hold others to."""

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from api.hub.backends.base import (
    Control,
    Event,
    EventSink,
    Message,
    Presence,
    Relay,
    Sender,
    Snapshot,
)

# A message in history: (seq, ts, user, client_id, data). A tuple of strings, ints
# and bytes, which CPython's garbage collector stops tracking after its first pass:
# a busy process holds hundreds of thousands of these, and each tracked object
# would lengthen every full collection (stalls of 100 ms and more were measured).
Stored = tuple[int, int, str, str, bytes]


@dataclass(slots=True)
class _Room:
    seq: int = 0
    history: deque[Stored] = field(default_factory=deque)
    members: dict[str, Sender] = field(default_factory=dict)  # client_id -> member
    active_at: float = 0.0  # last publish, join or leave


class MemoryBackend:
    """One process's rooms. Every method completes without yielding to the loop,
    so each is atomic with respect to the others."""

    def __init__(
        self,
        history_size: int = 1000,
        history_ttl_s: float = 7 * 86400,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._history_size = history_size
        self._history_ttl_s = history_ttl_s
        self._clock = clock
        self._rooms: dict[str, _Room] = {}
        self._subscribed: set[str] = set()
        self._sink: EventSink | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def _room(self, item_id: str) -> _Room:
        room = self._rooms.get(item_id)
        if room is None:
            room = self._rooms[item_id] = _Room(history=deque(maxlen=self._history_size))
        room.active_at = self._clock()
        return room

    def sweep(self) -> int:
        """Forget rooms nobody is in that were idle for the history TTL; how many."""
        horizon = self._clock() - self._history_ttl_s
        idle = [
            item_id
            for item_id, room in self._rooms.items()
            if room.active_at < horizon and not room.members and item_id not in self._subscribed
        ]
        for item_id in idle:
            del self._rooms[item_id]
        return len(idle)

    async def _sweep_forever(self) -> None:
        # Without this, every room ever written to would keep its history for good.
        while True:
            await asyncio.sleep(min(self._history_ttl_s / 4, 60.0))
            self.sweep()

    def _emit(self, event: Event) -> None:
        if self._sink is not None and event.item_id in self._subscribed:
            self._sink(event)

    def _forget_if_idle(self, item_id: str, room: _Room) -> None:
        # A room with neither members nor history holds nothing worth keeping.
        if not room.members and not room.history and item_id not in self._subscribed:
            del self._rooms[item_id]

    async def start(self, sink: EventSink) -> None:
        self._sink = sink
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def stop(self) -> None:
        self._sink = None
        self._subscribed.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    async def ready(self) -> bool:
        return self._sink is not None

    async def subscribe(self, item_id: str) -> None:
        self._subscribed.add(item_id)

    async def unsubscribe(self, item_id: str) -> None:
        self._subscribed.discard(item_id)
        room = self._rooms.get(item_id)
        if room is not None:
            self._forget_if_idle(item_id, room)

    async def publish(self, item_id: str, sender: Sender, data: bytes, ref: str | None) -> int:
        room = self._room(item_id)
        room.seq += 1
        message = Message(item_id, room.seq, int(time.time() * 1000), sender, data, ref)
        if self._history_size:
            # The stored copy drops the ref: it is the sender's ack, not part of history.
            room.history.append((room.seq, message.ts, sender.user, sender.client_id, data))
        self._emit(message)
        return room.seq

    async def relay(self, item_id: str, sender: Sender, payload: bytes) -> None:
        self._emit(Relay(item_id, sender, payload))

    async def control(self, item_id: str, action: str, user: str | None) -> None:
        self._emit(Control(item_id, action, user))

    async def join(self, item_id: str, member: Sender) -> None:
        self._room(item_id).members[member.client_id] = member
        self._emit(Presence(item_id, "join", member))

    async def leave(self, item_id: str, member: Sender) -> None:
        room = self._rooms.get(item_id)
        if room is None or room.members.pop(member.client_id, None) is None:
            return
        room.active_at = self._clock()
        self._emit(Presence(item_id, "leave", member))
        self._forget_if_idle(item_id, room)

    async def snapshot(self, item_id: str, since: int | None) -> Snapshot:
        room = self._room(item_id)
        members = tuple(room.members.values())
        if since is None:
            return Snapshot(room.seq, members, (), True)
        if since > room.seq:
            since = 0  # a stream the client never saw: give it all we have
            recovered = False
        else:
            oldest = room.history[0][0] if room.history else room.seq + 1
            recovered = since + 1 >= oldest
        messages = tuple(
            Message(item_id, seq, ts, Sender(user, client_id), data, None)
            for seq, ts, user, client_id, data in room.history
            if seq > since
        )
        return Snapshot(room.seq, members, messages, recovered)
