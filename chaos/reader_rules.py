"""The rules a reader's log must follow: once and in order, or told recovered:false.

Walking one reader's log (welcomes and messages, as they arrived):

- Within an epoch, seqs grow by exactly one. A seq at or below the last one seen
  in the same epoch is a redelivery (the README promises a replay "without
  duplicates"); a jump is a gap, allowed only as the first message after a
  welcome that said ``recovered: false``.
- A welcome whose epoch differs from the reader's previous one must say
  ``recovered: false`` (that is how the loss is announced); one in the same epoch
  must not report a ``seq`` below what the reader already saw.
- No reader ever gets a ``duplicate: true`` copy (only a publisher's repeat does).
- At the end the reader is in the room's current epoch, and has seen every message
  that epoch's history holds: after an epoch change the replay is "what history
  holds of the current epoch, from its start", and history is large enough to hold
  everything, so nothing of the current epoch may be missing.
"""

from chaos.http_api import History
from chaos.ledger import message_id
from chaos.reader import Reader, Seen, Welcome

SHOW = 8  # seqs shown in evidence


def check_reader(reader: Reader, history: History) -> list[str]:
    problems: list[str] = []
    name = reader.name
    epoch: str | None = None
    started, last, gap_ok = False, 0, False
    seen_final: set[int] = set()
    for event in reader.log:
        if isinstance(event, Welcome):
            if started and event.epoch != epoch:
                if event.recovered:
                    problems.append(
                        f"{name}: epoch changed {epoch} -> {event.epoch} (connection "
                        f"{event.connection} on p{event.process}) but welcome said recovered:true"
                    )
                last = 0
                gap_ok = True
            else:
                if started and event.seq < last:
                    problems.append(
                        f"{name}: welcome seq {event.seq} < seq {last} already seen in epoch "
                        f"{epoch} (connection {event.connection} on p{event.process})"
                    )
                gap_ok = gap_ok or not event.recovered
            epoch, started = event.epoch, True
            continue
        assert isinstance(event, Seen)
        if event.duplicate:
            problems.append(f"{name}: got a duplicate:true copy of seq {event.seq} ({event.id})")
        if event.seq <= last:
            problems.append(
                f"{name}: seq {event.seq} ({event.id}) after seq {last} in epoch {epoch}: "
                f"delivered again or out of order (connection {event.connection})"
            )
        elif event.seq > last + 1 and not gap_ok:
            problems.append(
                f"{name}: missed seqs {last + 1}..{event.seq - 1} of epoch {epoch} without "
                f"recovered:false (connection {event.connection}, live)"
            )
        gap_ok = False
        last = max(last, event.seq)
        if event.epoch == history.epoch:
            seen_final.add(event.seq)
    if epoch != history.epoch:
        problems.append(f"{name}: ended in epoch {epoch}, the room is in epoch {history.epoch}")
        return problems
    missing = sorted({int(m["seq"]) for m in history.messages} - seen_final)
    if missing:
        shown = ", ".join(map(str, missing[:SHOW])) + (" …" if len(missing) > SHOW else "")
        problems.append(
            f"{name}: never saw {len(missing)} message(s) that history holds: seqs {shown}"
        )
    return problems


def history_ids(history: History) -> dict[int, str]:
    return {int(m["seq"]): message_id(m) for m in history.messages}
