"""What the clients did and saw, kept for the checks after each fault.

A publish is a ``PublishRecord`` (one message id) with one ``Attempt`` per try:
the first, and each retry with the same id after a close or ``outcome_unknown``.
Its outcome, from the publisher's side:

- acked: a try came back as the publisher's own copy, or as a ``duplicate:true``
  copy (WebSocket), or as a ``seq`` (HTTP). The ack's epoch is the epoch of the
  connection's welcome (WebSocket) or of the answer (HTTP).
- refused: every try was answered ``unavailable`` (HTTP 503), ``rate_limited``, or never
  reached a server: certainly not published.
- unknown: neither, when the run stopped retrying.
"""

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

# Answers that say for certain that a try was not published.
NOT_PUBLISHED = frozenset({"unavailable", "rate_limited", "not_sent"})


@dataclass(frozen=True)
class Ack:
    epoch: str | None
    seq: int
    duplicate: bool
    at: float


@dataclass
class Attempt:
    ref: str
    via: str  # "ws:p1#3" (process, connection number) or "http:p0"
    sent_at: float
    outcome: str = "pending"  # acked | duplicate | unavailable | outcome_unknown | closed | …
    answered_at: float | None = None

    def settle(self, outcome: str) -> None:
        self.outcome = outcome
        self.answered_at = time.monotonic()


@dataclass
class PublishRecord:
    id: str
    publisher: str
    data: dict[str, Any]
    attempts: list[Attempt] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)

    @property
    def ack(self) -> Ack | None:
        return self.acks[0] if self.acks else None

    @property
    def status(self) -> str:
        if self.acks:
            return "acked"
        if self.attempts and all(a.outcome in NOT_PUBLISHED for a in self.attempts):
            return "refused"
        return "unknown"


class Ledger:
    """Every publish of one fault's room, and every (epoch, seq) -> id anyone saw."""

    def __init__(self) -> None:
        self.records: dict[str, PublishRecord] = {}
        # seen[(epoch, seq)] = {message id: {observer, ...}}
        self.seen: dict[tuple[str | None, int], dict[str, set[str]]] = defaultdict(
            lambda: defaultdict(set)
        )
        self.violations: list[str] = []  # found while running (evidence included)
        self.reconnects = 0

    def record(self, record: PublishRecord) -> None:
        self.records[record.id] = record

    def observe(self, observer: str, epoch: str | None, seq: int, message_id: str) -> None:
        self.seen[(epoch, seq)][message_id].add(observer)

    def violation(self, text: str) -> None:
        self.violations.append(text)


def message_id(frame: dict[str, Any]) -> str:
    """The id a message frame carries (v1.1), else the one the kit put in ``data``.

    The fallback keeps the counts meaningful against a v1 server; the checks report
    frames without ``id`` as a violation of their own."""
    found = frame.get("id")
    if isinstance(found, str):
        return found
    data = frame.get("data")
    if isinstance(data, dict) and isinstance(data.get("id"), str):
        return str(data["id"])
    return f"?seq{frame.get('seq')}"


def clip(value: object, limit: int = 240) -> str:
    """A frame as evidence: enough to recognise it, not a screenful."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
