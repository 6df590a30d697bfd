"""The PostgreSQL backend: several processes share rooms through the database a FastAPI
team already runs (``ITEMROOMS_BACKEND=postgres``).

- **Seqs and history**: publishes go in batches, in call order, on one connection
  (postgres_publish.py); ``{s}.publish`` locks each room's row, checks the id, takes
  the next seq, writes and trims history and NOTIFYs, in one transaction
  (postgres_schema.py).
- **Fan-out**: one listening connection per process, one channel per room it has
  members in; payloads over NOTIFY's 8,000 bytes go as a reference to a row read back.
  The listener keeps each room's epoch, last seq and members, fills gaps from history,
  and heals after a lost connection (postgres_listener.py).
- **Presence**: rows per connection, named by this process's node; a heartbeat keeps
  the node alive; the others reap a node whose heartbeat lapsed, with leave events; a
  process finding its own node reaped registers its members again
  (postgres_presence.py).
- **Upkeep**, once a minute by one process at a time: expired publish ids, bans and
  payloads, and rooms idle past ``ITEMROOMS_HISTORY_TTL_S`` without members.

Every connection is named ``itemrooms-<node>`` (``application_name``), so an operator
can tell a process's connections in ``pg_stat_activity``.
"""

import asyncio
import base64
import contextlib
import logging
import os
import secrets
from typing import Any

import asyncpg
import orjson

from itemrooms.api.hub.backends.base import (
    BANNED,
    CLOSED,
    BackendUnavailable,
    EventSink,
    ItemClosed,
    Message,
    PresencePage,
    Published,
    Sender,
    Snapshot,
)
from itemrooms.api.hub.backends.postgres_listener import Listener, row_message
from itemrooms.api.hub.backends.postgres_presence import PostgresPresence
from itemrooms.api.hub.backends.postgres_publish import PG_ERRORS, PublishBatcher
from itemrooms.api.hub.backends.postgres_schema import (
    MAX_NOTIFY_BYTES,
    schema_sql,
    version_problem,
)

log = logging.getLogger("itemrooms.postgres")

POOL_SIZE = 8
# Server errors that mean the connection itself is gone (terminated, shut down).
CONNECTION_LOST = (asyncpg.PostgresConnectionError, asyncpg.OperatorInterventionError)
UPKEEP_S = 60.0
STOP_WAIT_S = 5.0


class SchemaMismatch(Exception):
    """The schema holds tables of another version of itemrooms."""


def describe(exc: BaseException) -> str:
    """An error in words (a timeout's own message is empty)."""
    return str(exc) or type(exc).__name__


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresBackend:
    def __init__(
        self,
        url: str,
        *,
        schema: str = "itemrooms",
        history_size: int = 1000,
        history_ttl_s: float = 7 * 86400,
        presence_ttl_s: float = 15.0,
        dedup_s: float = 300.0,
        command_timeout_s: float = 5.0,
    ) -> None:
        self._url = url
        self._schema = schema
        self._s = quote_ident(schema)
        self._history_size = history_size
        self._idle_ms = int(history_ttl_s * 1000)
        self._ttl_ms = int(presence_ttl_s * 1000)
        self._timeout = command_timeout_s
        self.node_id = secrets.token_hex(6)
        self._pool: Any = None
        self.presence = PostgresPresence(self._query, self._s, self.node_id, self._ttl_ms)
        self._publisher = PublishBatcher(self._connect, self._s, history_size, int(dedup_s * 1000))
        self.listener = Listener(
            self._connect,
            self._query,
            self._s,
            schema,
            self._ttl_ms,
            self._after_reconnect,
        )
        self._heartbeat: asyncio.Task[None] | None = None
        self._upkeep_at = 0.0

    # --- lifecycle -------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        return {
            "timeout": self._timeout,
            "command_timeout": self._timeout,
            "server_settings": {"application_name": f"itemrooms-{os.getpid()}-{self.node_id}"},
        }

    async def _connect(self) -> Any:
        return await asyncpg.connect(self._url, **self._options())

    async def start(self, sink: EventSink) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._url, min_size=0, max_size=POOL_SIZE, **self._options()
            )
            await self._ensure_schema()
            await self.presence.heartbeat()
            await self.listener.start(sink)
        except (*PG_ERRORS, BackendUnavailable, SchemaMismatch) as exc:
            await self.stop()
            raise BackendUnavailable(f"PostgreSQL: {describe(exc)}") from exc
        self._upkeep_at = asyncio.get_running_loop().time() + UPKEEP_S / 2
        self._heartbeat = asyncio.get_running_loop().create_task(
            self._heartbeats(), name="itemrooms postgres heartbeat"
        )

    async def _ensure_schema(self) -> None:
        """Create the schema's tables and functions once, whoever starts first."""
        async with self._pool.acquire(timeout=self._timeout) as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", f"itemrooms schema {self._schema}"
            )
            problem = await version_problem(conn, self._schema)
            if problem is not None:
                raise SchemaMismatch(problem)
            await conn.execute(schema_sql(self._schema))

    async def _after_reconnect(self) -> None:
        """After the listening connection was lost: the database may be a new one
        (tables gone), and our heartbeat may have lapsed meanwhile."""
        # Connections opened before are likely dead (restarted, terminated): new ones,
        # rather than a failure on each first use.
        await self._pool.expire_connections()
        self._publisher.reset()
        exists = await self._query("fetchval", "SELECT to_regclass($1)", f"{self._s}.version")
        if exists is None:
            log.warning("PostgreSQL: schema %s is gone; creating it again", self._schema)
            try:
                await self._ensure_schema()
            except (*PG_ERRORS, SchemaMismatch) as exc:
                raise BackendUnavailable(str(exc)) from exc
        self.presence.hold_reaping()
        await self.presence.heartbeat()
        if self.presence.dirty:
            await self.presence.reconcile()

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        await self.listener.stop()
        await self._publisher.stop()
        if self._pool is not None:
            with contextlib.suppress(BackendUnavailable):
                await self.presence.stop()  # else our rows stop counting with our heartbeat
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), STOP_WAIT_S)
            except PG_ERRORS:
                pool.terminate()

    async def ready(self) -> bool:
        if not self.listener.live:
            return False
        try:
            await self._query("fetchval", "SELECT 1")
        except BackendUnavailable:
            return False
        return True

    async def _heartbeats(self) -> None:
        interval = self._ttl_ms / 3000
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            # A silent connection (a partition) is found by asking it, whatever else fails.
            await self.listener.probe(self._timeout)
            try:
                await self.presence.heartbeat()
                if self.presence.dirty:
                    await self.presence.reconcile()
                await self.presence.reap_dead_nodes()
                await self.listener.settle_suspects()
                if loop.time() >= self._upkeep_at:
                    self._upkeep_at = loop.time() + min(UPKEEP_S, self._idle_ms / 4000)
                    await self._query("fetchval", f"SELECT {self._s}.upkeep($1)", self._idle_ms)
            except BackendUnavailable as exc:
                log.debug("heartbeat failed: %s", exc)

    # --- rooms ----------------------------------------------------------------

    async def subscribe(self, item_id: str) -> tuple[Sender, ...]:
        return await self.listener.subscribe(item_id)

    async def unsubscribe(self, item_id: str) -> None:
        await self.listener.unsubscribe(item_id)

    # --- publishing -----------------------------------------------------------

    async def publish(
        self, item_id: str, sender: Sender, data: bytes, ref: str | None, id: str | None = None
    ) -> Published:
        if not self.listener.live:
            # Until every room is checked again, a publish could reuse a seq or lose its
            # ack: refuse it (certainly not published) instead.
            raise BackendUnavailable("reconnecting to PostgreSQL")
        row = await self._publisher.publish(
            item_id,
            sender.user,
            sender.client_id,
            ref,
            data.decode(),
            id,
            self.listener.floor(item_id),
        )
        kind = row["kind"]
        if kind == 2:
            raise ItemClosed(item_id)
        if kind == 0:
            return Published(row["seq"], row["epoch"])
        # Gone from history: a retry carries the same data (an id names one message).
        kept = row["data"].encode() if row["data"] is not None else data
        original = Message(
            item_id, row["seq"], row["ts"], Sender(sender.user, row["client_id"]), kept, None, id
        )
        return Published(row["seq"], row["epoch"], original)

    async def relay(self, item_id: str, sender: Sender, payload: bytes) -> None:
        head = orjson.dumps([sender.user, sender.client_id]).decode()
        notify = f"b{head}\n{base64.b64encode(payload).decode()}"
        if len(notify.encode()) <= MAX_NOTIFY_BYTES:
            sql = f"SELECT pg_notify({self._s}.channel($1), $2)"
            await self._query("execute", sql, item_id, notify)
        else:  # by reference: stored for the listeners to read back
            sql = f"SELECT {self._s}.relay($1, $2, $3)"
            await self._query("execute", sql, item_id, head, payload)

    async def control(
        self, item_id: str, action: str, user: str | None, ban_s: float = 0.0
    ) -> None:
        payload = "c" + orjson.dumps([action, user]).decode()
        s = self._s
        try:
            async with self._pool.acquire(timeout=self._timeout) as conn, conn.transaction():
                if action in ("open", "close"):
                    await conn.execute(f"SELECT {s}.room($1, 0)", item_id)
                    await conn.execute(
                        f"UPDATE {s}.rooms SET closed = $2 WHERE item = $1",
                        item_id,
                        action == "close",
                    )
                elif ban_s > 0 and user is not None:
                    await conn.execute(
                        f"INSERT INTO {s}.bans VALUES ($1, $2, {s}.now_ms() + $3) "
                        "ON CONFLICT (item, user_id) DO UPDATE SET until_ms = excluded.until_ms",
                        item_id,
                        user,
                        round(ban_s * 1000),
                    )
                if action != "open":  # delivered at commit: after what must hold is stored
                    await conn.execute(f"SELECT pg_notify({s}.channel($1), $2)", item_id, payload)
        except PG_ERRORS as exc:
            raise BackendUnavailable(str(exc)) from exc

    async def refusal(self, item_id: str, user: str) -> str | None:
        s = self._s
        row = await self._query(
            "fetchrow",
            f"SELECT (SELECT closed FROM {s}.rooms WHERE item = $1) AS closed, "
            f"(SELECT until_ms > {s}.now_ms() FROM {s}.bans WHERE item = $1 AND user_id = $2)"
            " AS banned",
            item_id,
            user,
        )
        if row["closed"]:
            return CLOSED
        return BANNED if row["banned"] else None

    # --- presence -------------------------------------------------------------

    async def join(self, item_id: str, member: Sender) -> None:
        await self.presence.join(item_id, member)

    async def leave(self, item_id: str, member: Sender) -> None:
        await self.presence.leave(item_id, member)

    # --- reading --------------------------------------------------------------

    async def snapshot(
        self, item_id: str, since: int | None, epoch: str | None = None, limit: int = 100
    ) -> Snapshot:
        rows = await self._query(
            "fetch",
            f"SELECT * FROM {self._s}.snapshot($1, $2, $3, $4)",
            item_id,
            -1 if since is None else since,
            epoch,
            limit,
        )
        room = rows[0]
        messages = tuple(row_message(item_id, r) for r in rows if r["kind"] == 2)
        return Snapshot(room["seq"], room["epoch"], messages, room["ts"] == 1)

    async def presence_page(self, item_id: str, after: str | None, limit: int) -> PresencePage:
        rows = await self._query(
            "fetch",
            f"""SELECT (SELECT count(DISTINCT user_id) FROM {self._s}.presence
                         WHERE item = $1) AS total, u.user_id, u.conns
                  FROM (SELECT user_id COLLATE "C" AS user_id, count(*) AS conns
                          FROM {self._s}.presence
                         WHERE item = $1 AND ($2::text IS NULL OR user_id COLLATE "C" > $2)
                         GROUP BY 1 ORDER BY 1 LIMIT $3) u
                 RIGHT JOIN (SELECT 1) one ON true""",
            item_id,
            after,
            limit + 1,  # one more than asked: whether there is a next page
        )
        users = tuple((r["user_id"], r["conns"]) for r in rows if r["user_id"] is not None)
        more = len(users) > limit
        users = users[:limit]
        return PresencePage(rows[0]["total"], users, users[-1][0] if more else None)

    async def history(
        self, item_id: str, epoch: str, after: int, upto: int, limit: int
    ) -> tuple[Message, ...] | None:
        rows = await self._query(
            "fetch",
            f"SELECT * FROM {self._s}.history($1, $2, $3, $4, $5)",
            item_id,
            epoch,
            after,
            upto,
            limit,
        )
        if rows and rows[0]["seq"] == -1:
            return None
        return tuple(row_message(item_id, r) for r in rows)

    async def _query(self, method: str, query: str, *args: Any) -> Any:
        """One statement on a pooled connection (``method``: fetch, fetchval, fetchrow,
        execute); any failure is ``BackendUnavailable``."""
        if self._pool is None:
            raise BackendUnavailable("PostgreSQL: not started")
        try:
            async with self._pool.acquire(timeout=self._timeout) as conn:
                return await getattr(conn, method)(query, *args)
        except PG_ERRORS as exc:
            if not isinstance(exc, asyncpg.PostgresError) or isinstance(exc, CONNECTION_LOST):
                # The server restarted or cut this process off: every pooled connection
                # is likely dead, and each would fail once. Open new ones instead.
                await self._pool.expire_connections()
            raise BackendUnavailable(f"PostgreSQL: {describe(exc)}") from exc
