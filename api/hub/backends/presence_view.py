"""What one process has told its members of a room's presence (the Redis and PostgreSQL
listeners keep one per subscribed room).

Only changes are announced: a join for a member already known (registered again after
the database lost its data) or a leave for one not known says nothing new. After a
reconnect, a member missing from the database is a *suspect*: believed present (in
welcomes too), and announced gone only if it is still missing a presence TTL later,
since the other processes may simply not have registered it again yet. That is what
keeps presence from flapping (leave, then join) when a database comes back.
"""

from dataclasses import dataclass, field

from itemrooms.api.hub.backends.base import Sender


@dataclass(slots=True)
class PresenceView:
    members: dict[str, Sender] = field(default_factory=dict)  # client_id -> member
    # Members missing from the database after a reconnect: client_id -> when (loop
    # time) to announce the leave if they are still missing then.
    suspects: dict[str, float] = field(default_factory=dict)

    def change(self, event: str, member: Sender) -> bool:
        """Record a ``join`` or ``leave``; whether it is news, to be announced."""
        self.suspects.pop(member.client_id, None)
        if event == "join":
            if member.client_id in self.members:
                return False
            self.members[member.client_id] = member
            return True
        return self.members.pop(member.client_id, None) is not None

    def recheck(self, current: list[Sender], deadline: float) -> list[Sender]:
        """After a reconnect: the database's members now. Those it lacks become suspects
        until ``deadline``; the new ones are returned, to be announced as joins."""
        present = {m.client_id for m in current}
        for client_id in self.members:
            if client_id not in present:
                self.suspects.setdefault(client_id, deadline)
        return [member for member in current if self.change("join", member)]

    def due(self, now: float) -> list[str]:
        """Suspects whose time is up: ask the database whether they are back."""
        return [client_id for client_id, at in self.suspects.items() if at <= now]

    def settle(self, client_id: str, present: bool) -> Sender | None:
        """A due suspect's fate: the member to announce gone, or None (it is back, or a
        join or leave settled it meanwhile)."""
        if self.suspects.pop(client_id, None) is None or present:
            return None
        return self.members.pop(client_id, None)
