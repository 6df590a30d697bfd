"""The hub: this process's rooms and their members.

It subscribes the backend to a room for the room's first local member and
unsubscribes after its last, turns backend events into frames (encoded once per
room, not once per member) and puts them on the members' queues without ever
awaiting a socket.

A member is welcomed in two steps so that it misses nothing and sees nothing
twice: it is registered as *joining* (its events are held back) before the room
snapshot is read; after the welcome and the replay, the held-back events newer
than the snapshot are released, and only then does it go live. If the room's
live stream has not yet reached the snapshot's seq (with Redis, the snapshot is
read on another connection than pub/sub, which may lag, or be reconnecting), the
member keeps a *floor*: live messages up to the snapshot's seq are skipped for
it, since its replay had them.

Presence is never held back: the welcome shows it as of the room's last presence batch
(api/hub/presence.py), and the next batch reaches the new member with everyone else.

A replay is read from the backend a page at a time, as the member's writer
sends it, so a resuming client that does not read holds one page, not the
room's history.
"""

import asyncio
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from itemrooms.api.close_codes import (
    EPOCH_CHANGED,
    FORBIDDEN,
    INTERNAL_ERROR,
    ITEM_CLOSED,
    SLOW_CONSUMER,
    Close,
)
from itemrooms.api.frames import encode_message, encode_welcome, with_ref
from itemrooms.api.hub.backends.base import (
    CLOSED,
    Backend,
    BackendUnavailable,
    Control,
    EpochChange,
    Event,
    Message,
    Presence,
    Published,
    Relay,
    Sender,
    Snapshot,
)
from itemrooms.api.hub.flush import FlushBatch
from itemrooms.api.hub.member import Member
from itemrooms.api.hub.outgoing import Outgoing
from itemrooms.api.hub.presence import Batch, PresencePolicy, RoomPresence
from itemrooms.api.metrics import Metrics

log = logging.getLogger("itemrooms.hub")


class Refused(Exception):
    """A join the room does not take (closed, or the user is banned): a close, not an error."""

    def __init__(self, close: Close) -> None:
        super().__init__(close.reason)
        self.close = close


REPLAY_PAGE = 100  # messages read from the backend at a time for a replay


@dataclass(slots=True)
class _Room:
    # members[client_id] = Member, for live members
    members: dict[str, Member] = field(default_factory=dict)
    # joining[client_id] = events held back until the member's welcome is out
    joining: dict[str, tuple[Member, list[Event]]] = field(default_factory=dict)
    subscribed: bool = False
    # Serialises subscribe and unsubscribe, so a join never races the last leave.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Why the room's subscribe failed: the joins that waited for it fail with it, rather
    # than each trying again in turn (a queue of timeouts while the backend is slow).
    failed: BaseException | None = None
    # Who is here, per user, from the subscribe on (api/hub/presence.py).
    presence: RoomPresence | None = None
    last_seq: int = 0  # the newest seq the backend delivered (in the current epoch)
    # floors[client_id] = the snapshot seq of a live member whose replay is ahead of
    # the live stream: it is sent only newer messages until the stream catches up.
    floors: dict[str, int] = field(default_factory=dict)


class Hub:
    def __init__(
        self,
        backend: Backend,
        metrics: Metrics | None = None,
        presence: PresencePolicy | None = None,
    ) -> None:
        self.backend = backend
        self.metrics = metrics or Metrics()
        self.presence_policy = presence or PresencePolicy()
        self._rooms: dict[str, _Room] = {}  # item_id -> room with local members
        self._tasks: set[asyncio.Task[Any]] = set()
        # Members' direct writes of one loop turn, written together (api/hub/flush.py).
        self.flush_batch = FlushBatch()

    async def start(self) -> None:
        await self.backend.start(self._on_event)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.backend.stop()

    # --- membership ---------------------------------------------------------

    async def join(
        self, item_id: str, member: Member, since: int | None, epoch: str | None = None
    ) -> None:
        """Welcome ``member`` into the room: welcome frame, replay, then live events."""
        held: list[Event] = []
        room = await self._enter(item_id, member, held)
        try:
            # Asked once registered: a kick or close stored after this answer is fanned
            # out after it too, and reaches this member (Backend.control).
            refusal = await self.backend.refusal(item_id, member.sender.user)
            if refusal is not None:
                raise Refused(ITEM_CLOSED if refusal == CLOSED else FORBIDDEN)
            await self.backend.join(item_id, member.sender)
            snapshot = await self.backend.snapshot(item_id, since, epoch, REPLAY_PAGE)
        except BaseException:
            room.joining.pop(member.client_id, None)
            try:
                await self.backend.leave(item_id, member.sender)
            finally:
                await self._release_if_empty(item_id, room)
            raise
        # Presence as of the room's last batch: the next batch reaches this member too.
        assert room.presence is not None  # set with the subscription
        others, count = room.presence.welcome(member.sender.user)
        welcome = encode_welcome(
            item_id, member.sender, snapshot, others, count, room.presence.large
        )
        # The welcome, the replay and what was held back are bounded by the history
        # size and the join's duration, so they bypass the send queue's limit.
        member.push(Outgoing(welcome), force=True)
        if snapshot.messages:
            member.push_stream(self._replay(item_id, member, snapshot))
        self._release_held(member, snapshot, held)
        del room.joining[member.client_id]
        room.members[member.client_id] = member
        if room.last_seq < snapshot.seq:
            room.floors[member.client_id] = snapshot.seq

    async def _replay(
        self, item_id: str, member: Member, snapshot: Snapshot
    ) -> AsyncGenerator[Outgoing, None]:
        """The messages after ``since`` up to the snapshot's seq, a page at a time."""
        page = snapshot.messages
        while True:
            for message in page:
                yield Outgoing(encode_message(message))
            last = page[-1].seq
            if len(page) < REPLAY_PAGE or last >= snapshot.seq:
                return
            try:
                more = await self.backend.history(
                    item_id, snapshot.epoch, last, snapshot.seq, REPLAY_PAGE
                )
            except BackendUnavailable:
                self.evict(item_id, member, INTERNAL_ERROR)
                return
            if more is None:  # the room's sequence was lost meanwhile
                self.evict(item_id, member, EPOCH_CHANGED)
                return
            page = more
            if not page or page[0].seq != last + 1:
                # History moved past what this client has read: it resumes from its
                # last seq and is told recovered: false, rather than miss messages.
                self.evict(item_id, member, SLOW_CONSUMER)
                return

    async def _enter(self, item_id: str, member: Member, held: list[Event]) -> _Room:
        """Register ``member`` as joining a subscribed room; return that room."""
        while True:
            room = self._rooms.get(item_id)
            if room is None:
                room = self._rooms[item_id] = _Room()
            async with room.lock:
                if room.failed is not None:
                    raise BackendUnavailable(f"subscribe failed: {room.failed}")
                if self._rooms.get(item_id) is not room:
                    continue  # released while we waited for the lock; take the new one
                if not room.subscribed:
                    try:
                        members = await self.backend.subscribe(item_id)
                    except BaseException as exc:
                        if not (room.members or room.joining):
                            # A joiner cancelled (its client left) is no backend failure:
                            # the next one waiting subscribes again.
                            if isinstance(exc, Exception):
                                room.failed = exc
                            del self._rooms[item_id]
                        raise
                    # At once, with no await between: the events from here on apply on
                    # top of ``members`` (Backend.subscribe).
                    room.presence = RoomPresence(
                        item_id,
                        self.presence_policy,
                        members,
                        partial(self._send_presence, item_id, room),
                    )
                    room.subscribed = True
                room.joining[member.client_id] = (member, held)
                return room

    def _release_held(self, member: Member, snapshot: Snapshot, held: list[Event]) -> None:
        # Presence is never held: the welcome has it as of the last batch.
        for event in held:
            if isinstance(event, Message):
                if event.seq > snapshot.seq:
                    self._deliver_message(member, event, encode_message(event))
            elif isinstance(event, Relay) and event.sender.client_id != member.client_id:
                member.push(Outgoing(data=event.payload), force=True)

    async def leave(self, item_id: str, member: Member) -> None:
        """Remove ``member`` (idempotent) and tell the others."""
        room = self._rooms.get(item_id)
        if room is None or room.members.pop(member.client_id, None) is None:
            return
        room.floors.pop(member.client_id, None)
        try:
            await self.backend.leave(item_id, member.sender)
        finally:
            await self._release_if_empty(item_id, room)

    async def _release_if_empty(self, item_id: str, room: _Room) -> None:
        async with room.lock:
            if room.members or room.joining or not room.subscribed:
                return
            # Unsubscribe before dropping the room: a joiner that comes meanwhile waits
            # on this lock, then subscribes a new room, never before we unsubscribed.
            if room.presence is not None:
                room.presence.close()
            try:
                await self.backend.unsubscribe(item_id)
            finally:
                room.subscribed = False
                if self._rooms.get(item_id) is room:
                    del self._rooms[item_id]

    # --- publishing ---------------------------------------------------------

    async def publish(
        self, item_id: str, sender: Sender, data: bytes, ref: str | None, id: str | None = None
    ) -> Published:
        """One path for every publish, WebSocket or HTTP, so members see one order."""
        return await self.backend.publish(item_id, sender, data, ref, id)

    async def relay(self, item_id: str, sender: Sender, payload: bytes) -> None:
        await self.backend.relay(item_id, sender, payload)

    # --- fan-out ------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        room = self._rooms.get(event.item_id)
        if room is None:
            return
        if isinstance(event, Control):
            self._apply_control(room, event)
            return
        if isinstance(event, EpochChange):
            self._restart(room, event)
            return
        if isinstance(event, Presence):
            if room.presence is not None:  # before, it was in what subscribe returned
                if event.event == "join":
                    room.presence.join(event.member)
                else:
                    room.presence.leave(event.member)
            return
        for _, held in room.joining.values():
            held.append(event)
        if isinstance(event, Message):
            room.last_seq = event.seq
        if not room.members:
            return
        overflowed: list[Member] = []
        dropped = 0
        if isinstance(event, Message):
            frame = encode_message(event)
            shared = Outgoing(frame, accepted_at=event.ts / 1000)
            sender_id = event.sender.client_id
            floors, skipped = room.floors, 0
            for cid, member in room.members.items():
                if member.close_with is not None:
                    dropped += 1
                    continue
                if floors and cid in floors:
                    floor = floors[cid]
                    if event.seq >= floor:
                        del floors[cid]  # caught up: live from the next message
                    if event.seq <= floor:
                        skipped += 1  # its replay had it
                        continue
                if cid == sender_id and event.ref is not None:
                    message = Outgoing(with_ref(frame, event.ref))
                else:
                    message = shared
                if not member.push(message):
                    overflowed.append(member)
            self.metrics.delivered.inc(len(room.members) - dropped - skipped - len(overflowed))
        else:
            shared = Outgoing(data=event.payload)
            skip = event.sender.client_id
            for cid, member in room.members.items():
                if cid != skip and not member.push(shared):
                    overflowed.append(member)
        for member in overflowed:
            self.evict(event.item_id, member, SLOW_CONSUMER)
        if dropped:
            self.metrics.dropped.inc(dropped)

    def _restart(self, room: _Room, event: EpochChange) -> None:
        """The room's sequence restarted: every member's seqs are of the old one."""
        room.last_seq = 0
        room.floors.clear()
        for member in [*room.members.values(), *(m for m, _ in room.joining.values())]:
            self.evict(event.item_id, member, EPOCH_CHANGED)

    def _apply_control(self, room: _Room, event: Control) -> None:
        close = ITEM_CLOSED if event.action == "close" else FORBIDDEN
        targets = [*room.members.values(), *(m for m, _ in room.joining.values())]
        for member in targets:
            if event.action == "close" or member.sender.user == event.user:
                self.evict(event.item_id, member, close)

    async def control(
        self, item_id: str, action: str, user: str | None, ban_s: float = 0.0
    ) -> None:
        await self.backend.control(item_id, action, user, ban_s)

    def _send_presence(self, item_id: str, room: _Room, batch: Batch) -> None:
        """A presence batch to the room's live members: each frame encoded once."""
        overflowed: list[Member] = []
        for frame, skip in batch:
            shared = Outgoing(frame)
            for member in room.members.values():
                if member.sender.user != skip and not member.push(shared):
                    overflowed.append(member)
        for member in dict.fromkeys(overflowed):  # once each, however many frames
            self.evict(item_id, member, SLOW_CONSUMER)

    def _deliver_message(self, member: Member, event: Message, frame: str) -> None:
        if event.sender.client_id == member.client_id and event.ref is not None:
            frame = with_ref(frame, event.ref)
        member.push(Outgoing(frame), force=True)

    def evict(self, item_id: str, member: Member, close: Close, drop_queued: bool = True) -> None:
        """Close a member's connection and take it out of the room now, from sync code."""
        if member.close_with is not None:
            return
        log.info("closing %s in %s: %s", member.client_id, item_id, close.reason)
        self.metrics.closes.labels(str(close.reason)).inc()
        member.close(close, drop_queued)
        task = asyncio.get_running_loop().create_task(self.leave(item_id, member))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
