"""What every client of one fault's room shares: the room, the processes, the ledger."""

from collections.abc import Sequence
from dataclasses import dataclass

from chaos.ledger import Ledger
from chaos.processes import ServerProcess


@dataclass
class Room:
    item_id: str
    processes: Sequence[ServerProcess]
    ledger: Ledger
    answer_timeout_s: float
