"""No leave/join flapping: a ``leave`` is for a member that is gone.

The README promises it for Redis coming back ("a member missing from Redis is
announced gone only if it is still missing a TTL later"), and a crashed or drained
process's members are gone by the time the kit sees their leave. The one case
where a live member is rightly announced gone is its own process stalling past the
TTL (paused, or cut off from Redis): the others cannot tell it from a crash. So a
leave event for a connection that the kit still had open is a broken rule, unless
that connection was on the process the fault stalled.
"""

from collections.abc import Sequence

from chaos.client import Client, Span

# A leave may overtake the closed client's own notice of its close (1012, 1001): the
# server announces the leave as it closes, the kit notices the close a moment later.
CLOSE_GRACE_S = 1.0


def check_leaves(
    clients: Sequence[Client], started: float, stalled_process: int | None
) -> list[str]:
    spans: dict[str, tuple[Client, Span]] = {
        span.client_id: (client, span) for client in clients for span in client.spans
    }
    flaps = []
    for viewer in clients:
        for at, client_id in viewer.leaves:
            owner = spans.get(client_id)
            if owner is None:
                continue
            client, span = owner
            still_open = span.closed is None or span.closed > at + CLOSE_GRACE_S
            if still_open and span.process != stalled_process:
                flaps.append(
                    f"{viewer.name} saw {client.name} ({client_id}, on p{span.process}) leave at "
                    f"+{at - started:.1f} s while its connection was open"
                )
    if not flaps:
        return []
    shown = "; ".join(flaps[:5]) + (f"; … ({len(flaps)} in all)" if len(flaps) > 5 else "")
    return [f"leave events for connected members (presence flapping): {shown}"]
