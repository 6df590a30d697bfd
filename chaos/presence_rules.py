"""No leave/join flapping: a ``leave`` is for a user that is gone.

The README promises it for Redis coming back ("a member missing from Redis is
announced gone only if it is still missing a TTL later"), and a crashed or drained
process's members are gone by the time the kit sees their leave. The one case
where a live member is rightly announced gone is its own process stalling past the
TTL (paused, or cut off from Redis): the others cannot tell it from a crash. So a
leave event for a user the kit had connected all along is a broken rule, unless that
connection was on the process the fault stalled. A user is one member (PROTOCOL v1.2):
its leave follows its last connection, and a leave decided just before the user came
back on a new connection may reach a viewer after that welcome, so "all along" means
since ``LEAVE_LAG_S`` before the leave arrived.
"""

from collections.abc import Sequence

from chaos.client import Client, Span

# A leave may overtake the closed client's own notice of its close (1012, 1001): the
# server announces the leave as it closes, the kit notices the close a moment later.
CLOSE_GRACE_S = 1.0
# How late a leave can reach a viewer after it was decided: a presence batch
# (ITEMROOMS_PRESENCE_INTERVAL_MS, 500 by default) and delivery.
LEAVE_LAG_S = 2.0


def check_leaves(
    clients: Sequence[Client], started: float, stalled_process: int | None
) -> list[str]:
    spans: dict[str, list[tuple[Client, Span]]] = {}
    for client in clients:
        for span in client.spans:
            spans.setdefault(span.user, []).append((client, span))
    flaps = []
    for viewer in clients:
        for at, user in viewer.leaves:
            for client, span in spans.get(user, []):
                open_all_along = span.opened <= at - LEAVE_LAG_S and (
                    span.closed is None or span.closed > at + CLOSE_GRACE_S
                )
                if open_all_along and span.process != stalled_process:
                    flaps.append(
                        f"{viewer.name} saw {client.name} ({span.client_id}, on "
                        f"p{span.process}) leave at +{at - started:.1f} s while its "
                        "connection was open"
                    )
    if not flaps:
        return []
    shown = "; ".join(flaps[:5]) + (f"; … ({len(flaps)} in all)" if len(flaps) > 5 else "")
    return [f"leave events for connected members (presence flapping): {shown}"]
