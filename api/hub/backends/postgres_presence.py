"""This process's rows in PostgreSQL presence, kept true by the process itself.

``local`` (the members this process has, by room) is the truth; the ``presence``
table holds a copy, each row naming this process's node, kept alive by the node's
heartbeat row. The copy can go wrong in three ways, each healed here rather than
waited out:

- a join or leave that failed or timed out may or may not have been applied;
- the other processes reaped this one (its heartbeat lapsed past the TTL during a
  stall: a VM pause, a long GC, a partition) and announced its members' leaves;
- the database lost its unlogged tables (a crash and restart).

The heartbeat notices the last two (the node was no longer registered); every failure
marks the copy dirty; a dirty copy is reconciled against ``local`` on the next
heartbeat, and again until that succeeds. The same design as redis_presence.py.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from itemrooms.api.hub.backends.base import BackendUnavailable, Sender

log = logging.getLogger("itemrooms.postgres")

Query = Callable[..., Awaitable[Any]]  # (method, sql, *args): PostgresBackend._query


class NodePresence:
    def __init__(self, query: Query, schema: str, node_id: str, ttl_ms: int) -> None:
        self._query = query
        self._s = schema
        self.node_id = node_id
        self._ttl_ms = ttl_ms
        self.local: dict[tuple[str, str], Sender] = {}  # (item, client_id) -> member
        self.dirty = False  # the table's copy may differ from ``local``
        self._reconciling = asyncio.Lock()
        self._reap_after = 0.0  # loop time before which no other node is reaped
        self._beat_at = 0.0  # loop time of the last heartbeat the database answered

    async def join(self, item_id: str, member: Sender) -> None:
        self.local[(item_id, member.client_id)] = member
        try:
            registered = await self._join([item_id], [member.client_id], [member.user])
        except BackendUnavailable:
            self.dirty = True  # it may have been applied: the caller's leave settles it
            raise
        if not registered:
            # Reaped while this process stalled: the next heartbeat registers the node
            # again, then every member (this one included).
            self.dirty = True

    async def leave(self, item_id: str, member: Sender) -> None:
        self.local.pop((item_id, member.client_id), None)
        try:
            await self._leave([item_id], [member.client_id])
        except BackendUnavailable as exc:
            # Our heartbeat keeps the row counted, so it must be removed later.
            log.debug("leave of %s deferred: %s", member.client_id, exc)
            self.dirty = True

    async def _join(self, items: list[str], clients: list[str], users: list[str]) -> bool:
        sql = f"SELECT {self._s}.join($1, $2, $3, $4)"
        return bool(await self._query("fetchval", sql, items, clients, users, self.node_id))

    async def _leave(self, items: list[str], clients: list[str]) -> None:
        await self._query("fetchval", f"SELECT {self._s}.leave($1, $2)", items, clients)

    # --- heartbeat and repair -----------------------------------------------

    async def heartbeat(self) -> None:
        """Refresh this node's heartbeat; notice when it may have lapsed.

        A lapse shows three ways: the node was not registered (reaped, or the database
        lost its unlogged tables); the heartbeat failed; or it came late (this process
        or the database stalled). In the last two cases the other nodes' heartbeats may
        have lapsed just the same, so none is reaped for a TTL."""
        loop = asyncio.get_running_loop()
        try:
            missing = await self._query("fetchval", f"SELECT {self._s}.heartbeat($1)", self.node_id)
        except BackendUnavailable:
            self.dirty = self.dirty or bool(self.local)
            self.hold_reaping()
            raise
        now = loop.time()
        # Beats come every third of the TTL: two thirds without one is a stall.
        late = self._beat_at > 0 and now - self._beat_at > self._ttl_ms * 2 / 3000
        self._beat_at = now
        if late:
            self.hold_reaping()
        if (missing or late) and self.local:
            if missing:
                log.warning(
                    "this process's presence had lapsed (a stall past the presence TTL, "
                    "or the database lost its unlogged tables); registering its %d members "
                    "again",
                    len(self.local),
                )
            self.dirty = True

    async def reconcile(self) -> None:
        """Make the table's rows of this node equal ``local``: register what is missing
        (its room hears ``join`` again), remove what has left."""
        async with self._reconciling:
            self.dirty = False  # failures from here on mark it again
            try:
                await self._reconcile()
            except BaseException:
                self.dirty = True
                raise

    async def _reconcile(self) -> None:
        rows = await self._query(
            "fetch",
            f"SELECT item, client_id FROM {self._s}.presence WHERE node = $1",
            self.node_id,
        )
        registered = {(r["item"], r["client_id"]) for r in rows}
        missing = [(k, m) for k, m in list(self.local.items()) if k not in registered]
        gone = [k for k in registered if k not in self.local]
        if missing:
            items, clients = [k[0] for k, _ in missing], [k[1] for k, _ in missing]
            if not await self._join(items, clients, [m.user for _, m in missing]):
                raise BackendUnavailable("this node is not registered yet")
        # A member that left while it was registered again: its leave may have run first.
        gone += [k for k, _ in missing if k not in self.local]
        if gone:
            await self._leave([k[0] for k in gone], [k[1] for k in gone])
        if missing or gone:
            log.info("presence repaired: %d registered again, %d removed", len(missing), len(gone))

    # --- crashed processes --------------------------------------------------

    def hold_reaping(self) -> None:
        """After the database comes back, every node's heartbeat may look old (an outage
        longer than the TTL): give them a TTL to beat again before taking them for
        dead, or every member would leave and join again."""
        self._reap_after = asyncio.get_running_loop().time() + self._ttl_ms / 1000

    async def reap_dead_nodes(self) -> None:
        if asyncio.get_running_loop().time() < self._reap_after:
            return
        removed = await self._query(
            "fetchval", f"SELECT {self._s}.reap($1, $2)", self.node_id, self._ttl_ms
        )
        if removed:
            log.info("removed %d members of stopped processes", removed)

    async def stop(self) -> None:
        """Leave events for whoever is still connected here, for the other processes."""
        await self._query("fetchval", f"SELECT {self._s}.drop_node($1)", self.node_id)
