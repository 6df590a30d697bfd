"""This process's rows in PostgreSQL presence (node_presence.py keeps them true).

Each member is a row naming this process's node; the node's heartbeat row keeps them
counted. Presence and heartbeats are unlogged tables: a crash empties them, and every
process finds its node gone at its next heartbeat and registers its members again.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from itemrooms.api.hub.backends.base import Sender
from itemrooms.api.hub.backends.node_presence import Entries, NodePresence

log = logging.getLogger("itemrooms.postgres")

Query = Callable[..., Awaitable[Any]]  # (method, sql, *args): PostgresBackend._query


class PostgresPresence(NodePresence):
    def __init__(self, query: Query, schema: str, node_id: str, ttl_ms: int) -> None:
        super().__init__(node_id, ttl_ms, log)
        self._query = query
        self._s = schema

    async def _beat(self) -> bool:
        return bool(await self._query("fetchval", f"SELECT {self._s}.heartbeat($1)", self.node_id))

    async def _register(self, entries: Entries) -> bool:
        items, clients, users = _columns(entries)
        sql = f"SELECT {self._s}.join($1, $2, $3, $4)"
        return bool(await self._query("fetchval", sql, items, clients, users, self.node_id))

    async def _unregister(self, entries: Entries) -> None:
        items, clients, _ = _columns(entries)
        await self._query("fetchval", f"SELECT {self._s}.leave($1, $2)", items, clients)

    async def _registered(self) -> Entries:
        rows = await self._query(
            "fetch",
            f"SELECT item, client_id, user_id FROM {self._s}.presence WHERE node = $1",
            self.node_id,
        )
        return [((r["item"], r["client_id"]), Sender(r["user_id"], r["client_id"])) for r in rows]

    async def _reap(self) -> int:
        sql = f"SELECT {self._s}.reap($1, $2)"
        return int(await self._query("fetchval", sql, self.node_id, self._ttl_ms))

    async def stop(self) -> None:
        """Leave events for whoever is still connected here, for the other processes."""
        await self._query("fetchval", f"SELECT {self._s}.drop_node($1)", self.node_id)


def _columns(entries: Entries) -> tuple[list[str], list[str], list[str]]:
    """(items, client_ids, users): the arrays {s}.join and {s}.leave take."""
    return (
        [item for (item, _), _ in entries],
        [cid for (_, cid), _ in entries],
        [member.user for _, member in entries],
    )
