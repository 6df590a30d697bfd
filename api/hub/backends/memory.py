"""In-process backend: the default, and the reference the contract tests hold others to."""

import asyncio
import contextlib
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from itemrooms.api.hub.backends.base import (
    BANNED,
    CLOSED,
    Control,
    Event,
    EventSink,
    ItemClosed,
    Message,
    Presence,
    PresencePage,
    Published,
    Relay,
    Sender,
    Snapshot,
)

# A message in history: (seq, ts, user, client_id, data, id). A tuple of strings,
# ints, bytes and None, which CPython's garbage collector stops tracking after its
# first pass: a busy process holds hundreds of thousands of these, and each tracked
# object would lengthen every full collection (stalls of 100 ms and more were measured).
Stored = tuple[int, int, str, str, bytes, str | None]


@dataclass(slots=True)
class _Room:
    epoch: str
    seq: int = 0
    history: deque[Stored] = field(default_factory=deque)
    members: dict[str, Sender] = field(default_factory=dict)  # client_id -> member
    active_at: float = 0.0  # last publish, join or leave
    # Publish ids of the dedup window: (user, id) -> (expires at, seq, ts, client_id),
    # oldest first (one TTL for all, so insertion order is expiry order).
    seen: dict[tuple[str, str], tuple[float, int, int, str]] = field(default_factory=dict)


def _message(item_id: str, stored: Stored) -> Message:
    seq, ts, user, client_id, data, id = stored
    return Message(item_id, seq, ts, Sender(user, client_id), data, None, id)


class MemoryBackend:
    """One process's rooms. Every method completes without yielding to the loop,
    so each is atomic with respect to the others."""

    def __init__(
        self,
        history_size: int = 1000,
        history_ttl_s: float = 7 * 86400,
        dedup_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._history_size = history_size
        self._history_ttl_s = history_ttl_s
        self._dedup_s = dedup_s
        self._clock = clock
        # A room's epoch: new per process start, and after any room that had messages
        # was forgotten (its seq restarts at 1 when it is made again). A room that never
        # had one loses nothing when forgotten: made again, it keeps the same epoch,
        # so its members resuming are not told of a loss that was none.
        self._epoch_prefix = secrets.token_hex(4)
        self._losses = 0
        self._rooms: dict[str, _Room] = {}
        self._subscribed: set[str] = set()
        self._closed: set[str] = set()  # closed items, until opened
        self._bans: dict[tuple[str, str], float] = {}  # (item, user): banned until
        self._sink: EventSink | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def _room(self, item_id: str) -> _Room:
        room = self._rooms.get(item_id)
        if room is None:
            epoch = f"{self._epoch_prefix}-{self._losses}"
            room = _Room(epoch, history=deque(maxlen=self._history_size))
            self._rooms[item_id] = room
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
            self._forget(item_id)
        return len(idle)

    def _forget(self, item_id: str) -> None:
        if self._rooms.pop(item_id).seq:
            self._losses += 1

    async def _sweep_forever(self) -> None:
        # Without this, every room ever written to would keep its history for good.
        while True:
            await asyncio.sleep(min(self._history_ttl_s / 4, 60.0))
            self.sweep()

    def _emit(self, event: Event) -> None:
        if self._sink is not None and event.item_id in self._subscribed:
            self._sink(event)

    def _forget_if_idle(self, item_id: str, room: _Room) -> None:
        # A room with neither members, history nor recent publish ids holds nothing
        # worth keeping.
        if (
            not room.members
            and not room.history
            and not room.seen
            and item_id not in self._subscribed
        ):
            self._forget(item_id)

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

    async def subscribe(self, item_id: str) -> tuple[Sender, ...]:
        self._subscribed.add(item_id)
        room = self._rooms.get(item_id)
        return () if room is None else tuple(room.members.values())

    async def unsubscribe(self, item_id: str) -> None:
        self._subscribed.discard(item_id)
        room = self._rooms.get(item_id)
        if room is not None:
            self._forget_if_idle(item_id, room)

    async def publish(
        self, item_id: str, sender: Sender, data: bytes, ref: str | None, id: str | None = None
    ) -> Published:
        if item_id in self._closed:
            raise ItemClosed(item_id)
        room = self._room(item_id)
        if id is not None:
            original = self._seen(item_id, room, sender.user, id, data)
            if original is not None:
                return Published(original.seq, room.epoch, original)
        room.seq += 1
        message = Message(item_id, room.seq, int(time.time() * 1000), sender, data, ref, id)
        if self._history_size:
            # The stored copy drops the ref: it is the sender's ack, not part of history.
            room.history.append((room.seq, message.ts, sender.user, sender.client_id, data, id))
        if id is not None:
            expires = self._clock() + self._dedup_s
            room.seen[(sender.user, id)] = (expires, room.seq, message.ts, sender.client_id)
        self._emit(message)
        return Published(room.seq, room.epoch)

    def _seen(self, item_id: str, room: _Room, user: str, id: str, data: bytes) -> Message | None:
        """The message ``user`` published with ``id`` within the dedup window, if any."""
        seen, now = room.seen, self._clock()
        while seen:
            oldest = next(iter(seen))
            if seen[oldest][0] > now:
                break
            del seen[oldest]
        entry = seen.get((user, id))
        if entry is None:
            return None
        _, seq, ts, client_id = entry
        history = room.history
        if history and history[0][0] <= seq:
            return _message(item_id, history[seq - history[0][0]])
        # Gone from history: a retry carries the same data (an id names one message).
        return Message(item_id, seq, ts, Sender(user, client_id), data, None, id)

    async def relay(self, item_id: str, sender: Sender, payload: bytes) -> None:
        self._emit(Relay(item_id, sender, payload))

    async def control(
        self, item_id: str, action: str, user: str | None, ban_s: float = 0.0
    ) -> None:
        now = self._clock()
        self._bans = {key: until for key, until in self._bans.items() if until > now}
        if action == "open":
            self._closed.discard(item_id)
            return
        if action == "close":
            self._closed.add(item_id)
        elif ban_s > 0 and user is not None:
            self._bans[(item_id, user)] = now + ban_s
        self._emit(Control(item_id, action, user))

    async def refusal(self, item_id: str, user: str) -> str | None:
        if item_id in self._closed:
            return CLOSED
        until = self._bans.get((item_id, user))
        return BANNED if until is not None and until > self._clock() else None

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

    async def snapshot(
        self, item_id: str, since: int | None, epoch: str | None = None, limit: int = 100
    ) -> Snapshot:
        room = self._room(item_id)
        if since is None:
            return Snapshot(room.seq, room.epoch, (), True)
        if since > room.seq or (epoch is not None and epoch != room.epoch):
            since = 0  # a stream the client never saw: give it all we have
            recovered = False
        else:
            oldest = room.history[0][0] if room.history else room.seq + 1
            recovered = since + 1 >= oldest
        messages = self._page(item_id, room, since, room.seq, limit)
        return Snapshot(room.seq, room.epoch, messages, recovered)

    async def presence_page(self, item_id: str, after: str | None, limit: int) -> PresencePage:
        room = self._rooms.get(item_id)
        counts: dict[str, int] = {}
        for member in room.members.values() if room is not None else ():
            counts[member.user] = counts.get(member.user, 0) + 1
        names = sorted(counts, key=str.encode)  # bytewise, as Redis and PostgreSQL sort
        if after is not None:
            after_bytes = after.encode()
            names = [n for n in names if n.encode() > after_bytes]
        page = tuple((n, counts[n]) for n in names[:limit])
        more = len(names) > limit
        return PresencePage(len(counts), page, page[-1][0] if more else None)

    async def history(
        self, item_id: str, epoch: str, after: int, upto: int, limit: int
    ) -> tuple[Message, ...] | None:
        room = self._rooms.get(item_id)
        if room is None or room.epoch != epoch:
            return None
        return self._page(item_id, room, after, upto, limit)

    @staticmethod
    def _page(item_id: str, room: _Room, after: int, upto: int, limit: int) -> tuple[Message, ...]:
        history = room.history
        if not history or limit <= 0:
            return ()
        start = max(0, after + 1 - history[0][0])
        stop = min(len(history), start + limit, upto + 1 - history[0][0])
        return tuple(_message(item_id, history[i]) for i in range(start, stop))
