"""After a fault is lifted: how long until every process is ready again and
presence is right again, sampled until the checks are done.

"Presence right" means: every kit client is connected, the room's HTTP presence
is exactly the set of their client_ids, and every client's own view (its welcome's
members plus the join/leave events since) is exactly the others. A recovery time
is measured to the sample after the last wrong one, so a state that was right for
a moment and broke again does not count as recovered.
"""

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from chaos.client import Client
from chaos.http_api import HttpApi
from chaos.processes import ServerProcess

SAMPLE_S = 0.1


@dataclass
class Track:
    """One condition over time: when it last became true, and why it was last false."""

    since: float | None = None  # start of the current run of true samples
    last_wrong: str = ""

    def sample(self, now: float, ok: bool, why: str = "") -> None:
        if ok and self.since is None:
            self.since = now
        elif not ok:
            self.since, self.last_wrong = None, why


class Recovery:
    def __init__(
        self,
        api: HttpApi,
        processes: Sequence[ServerProcess],
        clients: Sequence[Client],
        item_id: str,
    ) -> None:
        self.api = api
        self.processes = processes
        self.clients = clients
        self.item_id = item_id
        self.ready = Track()
        self.presence = Track()
        self._task: asyncio.Task[None] | None = None
        self._turn = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="recovery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def ready_after(self, healed_at: float) -> float | None:
        return None if self.ready.since is None else max(0.0, self.ready.since - healed_at)

    def presence_after(self, healed_at: float) -> float | None:
        return None if self.presence.since is None else max(0.0, self.presence.since - healed_at)

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            states = await asyncio.gather(*(self.api.not_ready(p.http_url) for p in self.processes))
            not_ready = [
                f"{p.name}: {why}" for p, why in zip(self.processes, states, strict=True) if why
            ]
            self.ready.sample(started, not not_ready, f"not ready: {'; '.join(not_ready)}")
            why = await self._presence_wrong()
            self.presence.sample(started, not why, why)
            await asyncio.sleep(max(0.0, SAMPLE_S - (time.monotonic() - started)))  # pace

    async def _presence_wrong(self) -> str:
        """Why presence is not right now, or "" when it is."""
        away = [c.name for c in self.clients if c.client_id is None]
        if away:
            return f"not connected: {', '.join(away)}"
        # Users: a user is one member (PROTOCOL v1.2), each of the kit's clients one user.
        connected = {c.user for c in self.clients if c.client_id is not None and c.user}
        present = None
        for k in range(len(self.processes)):
            process = self.processes[(self._turn + k) % len(self.processes)]
            present = await self.api.presence(process.http_url, self.item_id)
            if present is not None:
                break
        self._turn += 1
        if present is None:
            return "no process answered GET presence"
        if present != connected:
            return (
                f"GET presence has {sorted(present - connected)} too many, "
                f"lacks {sorted(connected - present)}"
            )
        for client in self.clients:
            others = connected - {client.user}
            view = set(client.members.values())
            if view != others:
                return (
                    f"{client.name} ({client.client_id}) sees {sorted(view - others)} too many, "
                    f"lacks {sorted(others - view)}"
                )
        return ""
