"""The backend contract: everything the hub needs from what crosses processes.

A backend owns, per room: the sequence (``seq`` grows by one per message and is
never reused within an *epoch*, across every process), the epoch itself (the
identity of that sequence: it changes only when the room's seq and history were
lost), the bounded history used for resume, the publish ids seen recently (so a
retried publish is applied once), the presence set, and the fan-out of events
to every process subscribed to the room. The hub (one per process) owns the
local sockets and never talks to another process except through this interface.

Events reach the hub through the ``EventSink`` given to ``start``; a backend
calls it from the event loop, in the room's order, for every event of a room
this process is subscribed to (its own publishes included).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Sender:
    user: str
    client_id: str


@dataclass(frozen=True, slots=True)
class Message:
    item_id: str
    seq: int
    ts: int  # ms since the epoch
    sender: Sender
    data: bytes  # the JSON encoding of the message's ``data``
    ref: str | None  # echoed to the sender only
    id: str | None = None  # the publisher's idempotency id, in every copy


@dataclass(frozen=True, slots=True)
class Presence:
    item_id: str
    event: str  # "join" or "leave"
    member: Sender


@dataclass(frozen=True, slots=True)
class Relay:
    item_id: str
    sender: Sender
    payload: bytes  # a binary frame, relayed unchanged to the other members


@dataclass(frozen=True, slots=True)
class Control:
    """The application closes connections: ``kick`` one user's, or ``close`` the room."""

    item_id: str
    action: str  # "kick" or "close" ("open" is never fanned out: nobody is closed)
    user: str | None  # the user to kick; None to close the room


# What Backend.refusal answers for a join (api/close_codes.py's reasons).
BANNED = "forbidden"  # kicked with a ban that still holds
CLOSED = "item_closed"  # closed, not yet reopened


@dataclass(frozen=True, slots=True)
class EpochChange:
    """The room's sequence was lost and restarted as ``epoch`` (Redis came back empty,
    say): every member's view is stale, so the hub closes them to resume."""

    item_id: str
    epoch: str


Event = Message | Presence | Relay | Control | EpochChange


class BackendUnavailable(Exception):
    """The backend cannot serve right now (Redis down, say), and nothing was done:
    a publish refused with this was certainly not published."""


class ItemClosed(Exception):
    """The item is closed (``control(..., "close")``) until opened: nothing was published."""


class OutcomeUnknown(Exception):
    """The backend took the publish but gave no answer in time: it may or may not be
    stored. Only a retry with the same id can tell (it is applied at most once)."""


@dataclass(frozen=True, slots=True)
class Published:
    """What a publish did: the message's seq in its epoch, or, when its id had been
    seen, the original message, which the sender alone is sent again."""

    seq: int
    epoch: str
    duplicate: Message | None = None


EventSink = Callable[[Event], None]


@dataclass(frozen=True, slots=True)
class PresencePage:
    """One page of a room's users, in the byte order of their names (HTTP presence)."""

    member_count: int  # users in the room, on every process
    users: tuple[tuple[str, int], ...]  # (user, connections), after ``after``
    next: str | None  # the last user of this page when there may be more


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A room's sequence at one instant, for a joining member's ``welcome``. Members are
    not in it: the hub keeps each subscribed room's presence from ``subscribe`` and the
    events that follow, so a join in a room of thousands reads none of them."""

    seq: int  # latest seq (0 for a room without messages)
    epoch: str
    # The first page of history after ``since``, oldest first; Backend.history has the rest.
    messages: tuple[Message, ...]
    recovered: bool  # False when some messages after ``since`` are gone


class Backend(Protocol):
    async def start(self, sink: EventSink) -> None:
        """Connect; from now on deliver events of subscribed rooms to ``sink``."""

    async def stop(self) -> None:
        """Disconnect and release everything; no more events after this returns."""

    async def ready(self) -> bool:
        """Whether the backend can serve right now (for ``/readyz``)."""

    async def subscribe(self, item_id: str) -> tuple[Sender, ...]:
        """Receive the room's events; returns once the subscription is confirmed,
        so that nothing published after it returns is missed.

        Returns the room's members (one per connection, every process) as of the
        return: every Presence event delivered from then on applies on top of them, and
        those delivered before are already in them. The backend reads them after its
        last await, so that the caller, resuming at once, holds a view the events keep
        true."""

    async def unsubscribe(self, item_id: str) -> None:
        """Stop receiving the room's events (this process has no member left in it)."""

    async def publish(
        self, item_id: str, sender: Sender, data: bytes, ref: str | None, id: str | None = None
    ) -> Published:
        """Assign the next seq, append to history and fan out, atomically.

        With an ``id`` already published by the same user into the room within the
        dedup window (and the same epoch), nothing is published or fanned out: the
        original message comes back as ``Published.duplicate``. The check and the
        publish are one atomic step, so concurrent retries apply once.

        Raises ItemClosed, atomically with the check, when the item is closed.
        Raises BackendUnavailable when certainly nothing was published, and
        OutcomeUnknown when the backend may have applied it (never retried here:
        only a publish with an id is safe to retry, and the client does that).

        Calls started in some order (tasks created one after the other) must get
        their seqs in that order: a connection does not wait for one publish before
        starting the next (api/routes/connection.py), so an implementation takes the
        publish in hand before its first await."""

    async def relay(self, item_id: str, sender: Sender, payload: bytes) -> None:
        """Fan out a binary frame; not stored, not sequenced."""

    async def control(
        self, item_id: str, action: str, user: str | None, ban_s: float = 0.0
    ) -> None:
        """Apply a moderator's action in every process, and remember what must hold.

        ``kick``: ``user``'s connections close; with ``ban_s`` the user's joins are
        refused for that long. ``close``: every connection closes and joins are refused
        until ``open``. What is remembered is stored before the kick or close is fanned
        out, so a join either sees it (Backend.refusal) or was registered in time to be
        closed by the fan-out."""

    async def refusal(self, item_id: str, user: str) -> str | None:
        """Why ``user`` may not join now: CLOSED, BANNED, or None."""

    async def join(self, item_id: str, member: Sender) -> None:
        """Add to presence and fan out a ``join`` event."""

    async def leave(self, item_id: str, member: Sender) -> None:
        """Remove from presence and fan out a ``leave`` event (no-op if absent).

        Never raises and never leaves a ghost: what cannot be done now (the backend is
        away) the backend does by itself once it can."""

    async def presence_page(self, item_id: str, after: str | None, limit: int) -> PresencePage:
        """At most ``limit`` users whose names sort after ``after`` (bytewise), with
        their connection counts, as the backend holds them now."""

    async def snapshot(
        self, item_id: str, since: int | None, epoch: str | None = None, limit: int = 100
    ) -> Snapshot:
        """Latest seq, epoch and (if ``since`` is given) the first ``limit`` messages
        after it, at one instant. Creates the room's epoch if it has none.

        ``recovered`` is False when history no longer holds every message after
        ``since``; when ``epoch`` is given and is not the room's, or ``since`` is above
        the latest seq (a stream the client never saw), the replay starts at the
        epoch's oldest message and ``recovered`` is False.
        """

    async def history(
        self, item_id: str, epoch: str, after: int, upto: int, limit: int
    ) -> tuple[Message, ...] | None:
        """At most ``limit`` messages with ``after < seq <= upto``, oldest first; None
        when the room is no longer in ``epoch`` (its history is another sequence's)."""
