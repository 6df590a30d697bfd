"""The invariants checked after each fault, from the room's HTTP history and the
clients' records. chaos/README.md states the same rules in prose.

History (H: the room's whole history, of its current epoch E):

1. An acknowledged message acked in epoch E is in H exactly once, at the seq of
   its ack. One acked in an earlier epoch, now superseded, may be absent (counted
   as "epoch-lost", allowed because the change was announced: chaos/reader_rules.py
   makes sure every reader was told) but never twice.
2. No message id is in H twice, acknowledged or not (a retry with the same id,
   HTTP ``Idempotency-Key`` included, is never a second message).
3. A publish refused with ``unavailable`` (HTTP 503) on every try is nowhere: not
   in H, not delivered to anyone.
4. Within an epoch a seq names one message: across acks, duplicate copies, every
   client's deliveries and H.
5. A message delivered in epoch E is in H (history lost nothing it delivered).
6. Messages carry their publisher's ``id`` (v1.1), in H and live.
7. The epoch changes only in a fault that loses the backend's data.
"""

from collections import defaultdict
from dataclasses import dataclass, field

from chaos.http_api import History
from chaos.ledger import Ledger, PublishRecord, clip, message_id

SHOW = 5  # examples given as evidence


@dataclass
class Counts:
    acked: int = 0
    lost: int = 0  # acked in the current epoch, missing from its history
    duplicated: int = 0  # ids in history more than once, or acked at two seqs
    epoch_lost: int = 0  # acked in an epoch that was lost (and announced)
    refused: int = 0  # certainly not published (unavailable / 503)
    unsettled: int = 0  # outcome still unknown at the end
    problems: list[str] = field(default_factory=list)


def _examples(items: list[str]) -> str:
    return "; ".join(items[:SHOW]) + (f"; … ({len(items)} in all)" if len(items) > SHOW else "")


def check_history(
    ledger: Ledger, history: History, epochs: set[str | None], loses_data: bool
) -> Counts:
    counts = Counts()
    seqs_of: dict[str, list[int]] = defaultdict(list)
    for message in history.messages:
        seqs_of[message_id(message)].append(int(message["seq"]))
        ledger.observe("history", history.epoch, int(message["seq"]), message_id(message))
    lost, moved, twice, refused_found, unknown_found = [], [], [], [], []
    for record in ledger.records.values():
        found = seqs_of.get(record.id, [])
        if len(found) > 1:
            counts.duplicated += 1
            twice.append(f"{record.id} at seqs {found} ({_tries(record)})")
        status = record.status
        if status == "refused":
            counts.refused += 1
            if found:
                refused_found.append(f"{record.id} ({_tries(record)}) at seq {found[0]}")
            continue
        if status == "unknown":
            counts.unsettled += 1
            continue
        counts.acked += 1
        acks = {(a.epoch, a.seq) for a in record.acks}
        if len(acks) > 1:
            counts.duplicated += 1
            twice.append(f"{record.id} acked as {sorted(acks, key=str)}")
        ack = record.acks[0]
        if ack.epoch != history.epoch:
            counts.epoch_lost += not found
            continue
        if not found:
            counts.lost += 1
            lost.append(f"{record.id} (seq {ack.seq}, {_tries(record)})")
        elif ack.seq not in found:
            moved.append(f"{record.id} acked at seq {ack.seq}, in history at {found}")
    known = set(ledger.records)
    unknown_found = [f"{i} at {s}" for i, s in seqs_of.items() if i not in known]
    problems = counts.problems
    if lost:
        problems.append(f"acknowledged but not in history: {_examples(lost)}")
    if moved:
        problems.append(f"acknowledged at one seq, in history at another: {_examples(moved)}")
    if twice:
        problems.append(f"published more than once: {_examples(twice)}")
    if refused_found:
        problems.append(f"answered unavailable, yet published: {_examples(refused_found)}")
    if unknown_found:
        problems.append(f"in history, published by nobody here: {_examples(unknown_found)}")
    problems.extend(_seq_reuse(ledger))
    problems.extend(_delivered_not_kept(ledger, history))
    problems.extend(_refused_delivered(ledger))
    no_id = [m for m in history.messages if "id" not in m]
    if no_id:
        problems.append(
            f"{len(no_id)} history message(s) without their id (v1.1), e.g. {clip(no_id[0])}"
        )
    if not loses_data and len(epochs) > 1:
        problems.append(
            f"the epoch changed although the backend kept its data: {sorted(map(str, epochs))}"
        )
    return counts


def _tries(record: PublishRecord) -> str:
    return "tries: " + ", ".join(f"{a.via} {a.outcome}" for a in record.attempts)


def _seq_reuse(ledger: Ledger) -> list[str]:
    reused = [
        f"epoch {epoch} seq {seq}: "
        + " vs ".join(f"{mid} (seen by {','.join(sorted(who))})" for mid, who in ids.items())
        for (epoch, seq), ids in sorted(
            ledger.seen.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])
        )
        if len(ids) > 1
    ]
    return [f"one seq names two messages: {_examples(reused)}"] if reused else []


def _delivered_not_kept(ledger: Ledger, history: History) -> list[str]:
    """Messages of the current epoch that someone was sent but history does not hold;
    acknowledged ones are already reported as lost."""
    in_history = {int(m["seq"]) for m in history.messages}
    acked = {r.id for r in ledger.records.values() if r.status == "acked"}
    gone = [
        f"seq {seq} ({mid})"
        for (epoch, seq), ids in sorted(ledger.seen.items(), key=lambda kv: kv[0][1])
        if epoch == history.epoch and seq not in in_history
        for mid in ids
        if mid not in acked
    ]
    return [f"delivered but not in history: {_examples(gone)}"] if gone else []


def _refused_delivered(ledger: Ledger) -> list[str]:
    seen_ids = {mid for ids in ledger.seen.values() for mid in ids}
    bad = [r.id for r in ledger.records.values() if r.status == "refused" and r.id in seen_ids]
    return [f"answered unavailable, yet delivered: {_examples(bad)}"] if bad else []
