"""A room's presence as this process shows it: one entry per user, changes in batches.

Backends report connections: a join and a leave per connection, from every process.
Members are told about users: a user's first connection is its join, its last one's
leave is its leave, so alice with two tabs is one member (across processes too, since
every process sees every connection's events).

Changes are sent at most once per interval: the first change after a quiet interval
goes out at once, the rest wait for the interval's end, coalesced (a user who came and
went within it is never mentioned). A storm of N joins thus costs each member a frame
per interval, not N frames.

Above ``list_max`` users the room is *large*: members are sent one ``presence_count``
frame per interval (counts, no names) instead of a frame per user, welcomes list at
most ``list_max`` users, and a user's leave counts only after ``grace_s`` without a
connection (a reload is not a leave and a join). Below 90% of ``list_max`` again, every
member is sent the whole list (``presence_list``) and v1 frames resume.

What members were told is the state *as of the last batch* (``shown``): a member that
goes live between batches is welcomed with it, and the next batch brings it up to date
with everyone else, so it sees no change twice and misses none.
"""

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, NamedTuple

from itemrooms.api.frames import (
    Listed,
    encode_presence,
    encode_presence_count,
    encode_presence_list,
)
from itemrooms.api.hub.backends.base import Sender

if TYPE_CHECKING:
    from itemrooms.api.settings import Settings


@dataclass(frozen=True, slots=True)
class PresencePolicy:
    interval_s: float = 0.5
    list_max: int = 100
    grace_s: float = 5.0

    @classmethod
    def of(cls, settings: "Settings") -> "PresencePolicy":
        return cls(
            settings.presence_interval_ms / 1000,
            settings.presence_list_max,
            settings.presence_grace_s,
        )

    @property
    def low_water(self) -> int:
        """A large room is small again at this many users (hysteresis: a room hovering
        at the threshold does not resend its list every interval)."""
        return self.list_max - self.list_max // 10


class _User(NamedTuple):
    """A tuple of atomic values, which the garbage collector stops tracking."""

    conns: int  # connections now, on every process
    client_id: str  # the connection named in the user's join, and in its leave
    shown: bool  # part of what members were last told (listed, or counted)
    gone_at: float  # loop time its last connection left; 0.0 while it has one


# A batch to send: (frame, the user whose connections skip it, or None for everyone).
Batch = list[tuple[str, str | None]]


class RoomPresence:
    """Fed a room's connection events; calls ``send`` with each batch of frames."""

    __slots__ = (
        "item_id",
        "_policy",
        "_send",
        "_loop",
        "users",
        "shown_count",
        "large",
        "_joined",
        "_leaving",
        "_flushed_at",
        "_timer",
    )

    def __init__(
        self,
        item_id: str,
        policy: PresencePolicy,
        members: Iterable[Sender],
        send: Callable[[Batch], None],
    ) -> None:
        self.item_id = item_id
        self._policy = policy
        self._send = send
        self._loop = asyncio.get_running_loop()
        self.users: dict[str, _User] = {}
        for member in members:  # what the backend held at subscribe: already known
            user = self.users.get(member.user)
            conns = user.conns + 1 if user is not None else 1
            cid = user.client_id if user is not None else member.client_id
            self.users[member.user] = _User(conns, cid, True, 0.0)
        self.shown_count = len(self.users)
        self.large = self.shown_count > policy.list_max
        self._joined: list[str] = []  # users whose first connection came since the batch
        self._leaving: deque[tuple[float, str]] = deque()  # (gone_at, user), oldest first
        self._flushed_at = -1e18
        self._timer: asyncio.TimerHandle | None = None

    # --- events -------------------------------------------------------------

    def join(self, member: Sender) -> None:
        user = self.users.get(member.user)
        if user is None:
            self.users[member.user] = _User(1, member.client_id, False, 0.0)
        elif user.conns:
            self.users[member.user] = user._replace(conns=user.conns + 1)
            return  # another connection of a present user: nothing to tell
        else:  # back before its leave was told: the join it was is still good
            self.users[member.user] = user._replace(conns=1, gone_at=0.0)
        self._joined.append(member.user)
        self._schedule(0.0)

    def leave(self, member: Sender) -> None:
        user = self.users.get(member.user)
        if user is None or not user.conns:
            return  # not known here (a suspect's leave after a reconnect, say)
        if user.conns > 1:
            self.users[member.user] = user._replace(conns=user.conns - 1)
            return
        now = self._loop.time()
        self.users[member.user] = user._replace(conns=0, gone_at=now)
        self._leaving.append((now, member.user))
        self._schedule(self._grace())

    # --- what a joining member is told --------------------------------------

    def welcome(self, user: str) -> tuple[list[Listed], int]:
        """The users to list in ``user``'s welcome (not itself) and the member count,
        you included: what the others were told at the last batch."""
        others = ((name, u.client_id) for name, u in self.users.items() if u.shown and name != user)
        listed = list(islice(others, self._policy.list_max))
        own = self.users.get(user)
        return listed, self.shown_count + (0 if own is not None and own.shown else 1)

    # --- batches --------------------------------------------------------------

    def _grace(self) -> float:
        return self._policy.grace_s if self.large else 0.0

    def _schedule(self, wait: float) -> None:
        """Flush at once if the last batch is an interval old, else at its next turn
        (or, for a leave under grace, when the grace is over, whichever is later)."""
        now = self._loop.time()
        due = max(self._flushed_at + self._policy.interval_s, now + wait)
        if self._timer is not None:
            if self._timer.when() <= due:
                return
            self._timer.cancel()  # a grace's end, later than this batch's turn
            self._timer = None
        if due <= now:
            self.flush()
        else:
            self._timer = self._loop.call_at(due, self.flush)

    def flush(self) -> None:
        self._timer = None
        now = self._loop.time()
        self._flushed_at = now
        users = self.users
        left: list[Listed] = []
        grace = self._grace()
        leaving = self._leaving
        while leaving and leaving[0][0] + grace <= now:
            gone_at, name = leaving.popleft()
            user = users.get(name)
            if user is not None and not user.conns and user.gone_at == gone_at:
                del users[name]
                if user.shown:
                    left.append((name, user.client_id))
        joined: list[Listed] = []
        for name in self._joined:
            user = users.get(name)
            if user is not None and user.conns and not user.shown:
                users[name] = user._replace(shown=True)
                joined.append((name, user.client_id))
        self._joined.clear()
        self.shown_count += len(joined) - len(left)
        batch = self._batch(joined, left)
        if leaving:  # leaves under grace: their batch comes when it is over
            self._schedule(leaving[0][0] + self._grace() - now)
        if batch:
            self._send(batch)

    def _batch(self, joined: list[Listed], left: list[Listed]) -> Batch:
        policy, count = self._policy, self.shown_count
        if self.large and count <= policy.low_water:
            self.large = False
            everyone = [(name, u.client_id) for name, u in self.users.items() if u.shown]
            return [(encode_presence_list(self.item_id, everyone), None)]
        if not self.large and count > policy.list_max:
            self.large = True
        if self.large:
            if not (joined or left):
                return []
            frame = encode_presence_count(self.item_id, count, len(joined), len(left))
            return [(frame, None)]
        item = self.item_id
        batch: Batch = [(encode_presence(item, "leave", n, cid), n) for n, cid in left]
        batch += [(encode_presence(item, "join", n, cid), n) for n, cid in joined]
        return batch

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
