"""The backend contract: everything the hub needs from what crosses processes.

A backend owns, per room: the sequence (``seq`` grows by one per message and is
never reused, across every process), the bounded history used for resume, the
presence set, and the fan-out of events to every process subscribed to the
room. The hub (one per process) owns the local sockets and never talks to
another process except through this interface.

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
    action: str  # "kick" or "close"
    user: str | None  # the user to kick; None to close the room


Event = Message | Presence | Relay | Control


class BackendUnavailable(Exception):
    """The backend cannot serve right now (Redis down, say); the caller answers with
    an error instead of dropping anything silently."""


EventSink = Callable[[Event], None]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A room's state at one instant, for a joining member's ``welcome``."""

    seq: int  # latest seq (0 for a room without messages)
    members: tuple[Sender, ...]
    messages: tuple[Message, ...]  # history after ``since``, oldest first
    recovered: bool  # False when some messages after ``since`` are gone


class Backend(Protocol):
    async def start(self, sink: EventSink) -> None:
        """Connect; from now on deliver events of subscribed rooms to ``sink``."""

    async def stop(self) -> None:
        """Disconnect and release everything; no more events after this returns."""

    async def ready(self) -> bool:
        """Whether the backend can serve right now (for ``/readyz``)."""

    async def subscribe(self, item_id: str) -> None:
        """Receive the room's events; returns once the subscription is confirmed,
        so that nothing published after it returns is missed."""

    async def unsubscribe(self, item_id: str) -> None:
        """Stop receiving the room's events (this process has no member left in it)."""

    async def publish(self, item_id: str, sender: Sender, data: bytes, ref: str | None) -> int:
        """Assign the next seq, append to history and fan out, atomically; return the seq.

        Calls started in some order (tasks created one after the other) must get
        their seqs in that order: a connection does not wait for one publish before
        starting the next (api/routes/connection.py), so an implementation takes the
        publish in hand before its first await."""

    async def relay(self, item_id: str, sender: Sender, payload: bytes) -> None:
        """Fan out a binary frame; not stored, not sequenced."""

    async def control(self, item_id: str, action: str, user: str | None) -> None:
        """Fan out a kick or a close to every process with members in the room."""

    async def join(self, item_id: str, member: Sender) -> None:
        """Add to presence and fan out a ``join`` event."""

    async def leave(self, item_id: str, member: Sender) -> None:
        """Remove from presence and fan out a ``leave`` event (no-op if absent)."""

    async def snapshot(self, item_id: str, since: int | None) -> Snapshot:
        """Latest seq, members and (if ``since`` is given) the history after it, at one instant.

        A ``since`` above the latest seq means the room's stream is not the one
        the client knew (history was lost with a restart): the whole history is
        returned and ``recovered`` is False.
        """
