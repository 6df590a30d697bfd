"""A WebSocket publisher: unique ``id`` and ``ref`` per publish, settled by its answer.

Answers (each names the try by its ``ref``): the own copy (published: acked), a
``duplicate:true`` copy (published earlier: acked, with the original seq),
``unavailable`` (certainly not published: never retried, so the checks can prove it
is absent), ``outcome_unknown`` (retried with the same id), ``rate_limited`` (not
published: retried). A try whose connection closed before its answer is unknown,
and is sent again with the same id on the next connection. A try that gets no
answer at all on an open connection within the answer timeout breaks a rule: the
connection is then dropped, so the publish is retried and the run goes on.
"""

import asyncio
import time
from collections import deque
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from chaos.client import Client
from chaos.ledger import Ack, Attempt, PublishRecord, clip, message_id

RETRY_DELAY_S = 0.25
MAX_IN_FLIGHT = 64


class Publisher(Client):
    def __init__(self, *args: Any, tag: str, rate: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tag = tag
        self.interval = 1.0 / rate
        self.generating = True
        self.count = 0
        self.pending: dict[str, tuple[Attempt, PublishRecord]] = {}  # ref -> try
        self.retry: deque[tuple[float, str]] = deque()  # (not before, id)
        self.records: dict[str, PublishRecord] = {}
        self.late_copies = 0  # own copies that came after outcome_unknown

    @property
    def settled(self) -> bool:
        """Nothing in flight and nothing left to retry."""
        return not self.pending and not self.retry

    def unsettled(self) -> list[PublishRecord]:
        return [r for r in self.records.values() if r.status == "unknown"]

    async def session(self, ws: ClientConnection) -> None:
        sender = asyncio.get_running_loop().create_task(self._send_loop(ws))
        try:
            async for raw in ws:
                self._on_frame(orjson.loads(raw))
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    def on_closed(self) -> None:
        for attempt, record in self.pending.values():
            attempt.settle("closed")
            self.retry.append((time.monotonic(), record.id))
        self.pending.clear()

    async def _send_loop(self, ws: ClientConnection) -> None:
        next_new = time.monotonic()
        while True:
            now = time.monotonic()
            self._watch(now)
            while self.retry and self.retry[0][0] <= now and len(self.pending) < MAX_IN_FLIGHT:
                _, record_id = self.retry.popleft()
                if self.records[record_id].status != "acked":  # a late copy may have settled it
                    await self._send(ws, self.records[record_id])
            if self.generating and now >= next_new and len(self.pending) < MAX_IN_FLIGHT:
                await self._send(ws, self._new_record())
                next_new = max(next_new + self.interval, now - 1.0)
            await asyncio.sleep(min(self.interval, 0.05))  # the publishing pace

    def _new_record(self) -> PublishRecord:
        self.count += 1
        record_id = f"{self.tag}.{self.name}.{self.count}"
        record = PublishRecord(record_id, self.name, {"id": record_id, "n": self.count})
        self.records[record_id] = record
        self.room.ledger.record(record)
        return record

    async def _send(self, ws: ClientConnection, record: PublishRecord) -> None:
        ref = f"{record.id}#{len(record.attempts) + 1}"
        server = self.room.processes[self.process].name
        attempt = Attempt(ref, f"ws:{server}#{self.connection}", time.monotonic())
        record.attempts.append(attempt)
        self.pending[ref] = (attempt, record)
        frame = {"type": "publish", "data": record.data, "ref": ref, "id": record.id}
        try:
            await ws.send(orjson.dumps(frame).decode())
        except ConnectionClosed:
            pass  # on_closed settles it as "closed" and queues the retry

    def _watch(self, now: float) -> None:
        """A publish on an open connection must get its copy or an error."""
        late = [a for a, _ in self.pending.values() if now - a.sent_at > self.room.answer_timeout_s]
        if late:
            self.room.ledger.violation(
                f"{self.name}: {len(late)} publish(es) on an open connection got no answer in "
                f"{self.room.answer_timeout_s:.0f} s (first: ref {late[0].ref} via {late[0].via})"
            )
            for attempt in late:
                attempt.outcome = "silent"
            self.kill_connection()

    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "message":
            seq = int(frame["seq"])
            self.room.ledger.observe(self.name, self.epoch, seq, message_id(frame))
            ref = frame.get("ref")
            if ref is not None:
                self._on_copy(frame, ref, seq)
        elif kind == "presence":
            self.on_presence(frame)
        elif kind == "error":
            self._on_error(frame)

    def _on_copy(self, frame: dict[str, Any], ref: str, seq: int) -> None:
        entry = self.pending.pop(ref, None) or self._late(ref)
        if entry is None:
            record = self.records.get(ref.rpartition("#")[0])
            tries = ", ".join(f"{a.ref} {a.outcome}" for a in record.attempts) if record else "?"
            self.room.ledger.violation(
                f"{self.name}: a copy (seq {seq}) for {ref}, which was already answered "
                f"(tries: {tries})"
            )
            return
        attempt, record = entry
        duplicate = bool(frame.get("duplicate"))
        attempt.settle("duplicate" if duplicate else "acked")
        record.acks.append(Ack(self.epoch, seq, duplicate, time.monotonic()))
        if frame.get("data") != record.data or message_id(frame) != record.id:
            self.room.ledger.violation(
                f"{self.name}: the copy for {ref} is not the message published: {clip(frame)}"
            )

    def _late(self, ref: str) -> tuple[Attempt, PublishRecord] | None:
        """A copy after ``outcome_unknown`` settles that outcome: the message was stored.

        The contract does not promise one answer per publish, only that
        ``outcome_unknown`` may or may not have been stored; a copy that arrives
        later says which. After ``unavailable`` ("certainly not published") or a
        copy, a second answer is a broken rule, and this returns None for it."""
        record = self.records.get(ref.rpartition("#")[0])
        if record is None:
            return None
        attempt = next((a for a in record.attempts if a.ref == ref), None)
        if attempt is None or attempt.outcome != "outcome_unknown":
            return None
        self.late_copies += 1
        return attempt, record

    def _on_error(self, frame: dict[str, Any]) -> None:
        ref, code = frame.get("ref"), frame.get("code")
        entry = self.pending.pop(ref, None) if isinstance(ref, str) else None
        if entry is None:
            self.room.ledger.violation(
                f"{self.name}: an error for no pending publish: {clip(frame)}"
            )
            return
        attempt, record = entry
        attempt.settle(str(code))
        if code == "unavailable":
            if record.status == "unknown":  # an earlier try may have been stored
                self.retry.append((time.monotonic() + RETRY_DELAY_S, record.id))
        elif code in ("outcome_unknown", "rate_limited"):
            self.retry.append((time.monotonic() + RETRY_DELAY_S, record.id))
        else:
            self.room.ledger.violation(f"{self.name}: publish {ref} answered {clip(frame)}")
