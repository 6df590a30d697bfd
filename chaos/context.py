"""What a fault acts on and reports into, for one fault's run."""

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from chaos.client import Client
from chaos.cluster import Cluster
from chaos.http_api import HttpApi
from chaos.options import Options
from chaos.processes import ServerProcess
from chaos.room import Room


@dataclass
class PhaseContext:
    cluster: Cluster
    options: Options
    room: Room
    clients: Sequence[Client]
    api: HttpApi
    victim: ServerProcess
    notes: list[str] = field(default_factory=list)  # what the fault observed, for the report
    healed_at: float = 0.0  # when the injected condition was lifted

    def violation(self, text: str) -> None:
        self.room.ledger.violation(text)

    def heal(self) -> None:
        self.healed_at = time.monotonic()

    def clients_on(self, process: ServerProcess) -> list[Client]:
        return [c for c in self.clients if c.client_id is not None and c.process == process.index]
