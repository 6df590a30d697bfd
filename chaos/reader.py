"""A reader: resumes with ``since`` and ``epoch`` and logs everything it is shown.

The log is judged afterwards (chaos/reader_rules.py), so a broken rule can be shown
with the frames around it. Nothing is dropped or reordered here: a client library
would hide exactly what the kit is looking for.
"""

import time
from dataclasses import dataclass
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection

from chaos.client import Client
from chaos.ledger import clip, message_id


@dataclass(frozen=True)
class Welcome:
    at: float
    connection: int
    process: int
    epoch: str | None
    seq: int
    recovered: bool
    since: int  # what the reader asked for
    asked_epoch: str | None


@dataclass(frozen=True)
class Seen:
    at: float
    connection: int
    epoch: str | None
    seq: int
    id: str
    has_id: bool
    duplicate: bool


class Reader(Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log: list[Welcome | Seen] = []
        self.last_seq = 0  # of self.epoch
        self._asked: tuple[int, str | None] = (0, None)  # since and epoch of this connect

    def query(self) -> str:
        self._asked = (self.last_seq, self.epoch)
        if self.epoch is None:
            return f"since={self.last_seq}"
        return f"since={self.last_seq}&epoch={self.epoch}"

    def on_welcome(self, frame: dict[str, Any]) -> None:
        since, asked_epoch = self._asked
        epoch = frame.get("epoch")
        self.log.append(
            Welcome(
                time.monotonic(),
                self.connection,
                self.process,
                epoch,
                int(frame["seq"]),
                bool(frame["recovered"]),
                since,
                asked_epoch,
            )
        )
        if epoch != asked_epoch:
            self.last_seq = 0  # a new sequence: nothing of it seen yet

    async def session(self, ws: ClientConnection) -> None:
        ledger = self.room.ledger
        async for raw in ws:
            frame = orjson.loads(raw)
            kind = frame.get("type")
            if kind == "message":
                seen = Seen(
                    time.monotonic(),
                    self.connection,
                    self.epoch,
                    int(frame["seq"]),
                    message_id(frame),
                    "id" in frame,
                    bool(frame.get("duplicate")),
                )
                self.log.append(seen)
                ledger.observe(self.name, self.epoch, seen.seq, seen.id)
                self.last_seq = max(self.last_seq, seen.seq)
            elif kind == "presence":
                self.on_presence(frame)
            elif kind == "error":
                ledger.violation(f"{self.name}: unexpected error frame {clip(frame)}")
