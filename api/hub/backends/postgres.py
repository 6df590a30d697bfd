"""The PostgreSQL backend: several processes share rooms through the database a FastAPI
team already runs (``ITEMROOMS_BACKEND=postgres``).

- **Seqs and history**: one function call per publish (api/hub/backends/postgres_schema.py)
  locks the room's row, checks the id, takes the next seq, writes the history row,
  trims history to ``ITEMROOMS_HISTORY_SIZE`` and NOTIFYs, in one transaction.
- **Order**: a process's publishes go through one connection, in call order (an
  asyncio lock is FIFO and is taken before the first await), so a connection's
  messages keep their order; every listener sees a room's messages in commit order,
  which is seq order.
- **Fan-out**: one listening connection per process, one channel per room it has
  members in (``LISTEN`` returns once the server has it: nothing published after
  ``subscribe`` returns is missed). Payloads over 8,000 bytes go out as a reference
  to the history row.
- **Presence**: rows per connection, named by this process; a process's heartbeat
  keeps its rows alive, and rows of processes that stopped beating are not counted.

Not yet: healing after the listening connection is lost, and reaping the rows of dead
processes with leave events (the fault kit's issue); rooms are not forgotten after
``ITEMROOMS_HISTORY_TTL_S``.
"""

import asyncio
import base64
import hashlib
import logging
import secrets
from collections import deque
from typing import Any

import asyncpg
import orjson

from itemrooms.api.hub.backends.base import (
    BANNED,
    CLOSED,
    BackendUnavailable,
    Control,
    Event,
    EventSink,
    ItemClosed,
    Message,
    OutcomeUnknown,
    Presence,
    Published,
    Relay,
    Sender,
    Snapshot,
)
from itemrooms.api.hub.backends.postgres_schema import MAX_NOTIFY_BYTES, SCHEMA

log = logging.getLogger("itemrooms.postgres")

# What a lost or refused connection raises; a publish caught by one mid-call may or
# may not have committed.
PG_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, TimeoutError)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresBackend:
    def __init__(
        self,
        url: str,
        *,
        schema: str = "itemrooms",
        history_size: int = 1000,
        presence_ttl_s: float = 15.0,
        dedup_s: float = 300.0,
        command_timeout_s: float = 5.0,
    ) -> None:
        self._url = url
        self._schema = schema
        self._s = quote_ident(schema)
        self._history_size = history_size
        self._ttl_ms = int(presence_ttl_s * 1000)
        self._dedup_ms = int(dedup_s * 1000)
        self._timeout = command_timeout_s
        self.node_id = secrets.token_hex(6)
        self._sink: EventSink | None = None
        self._pool: Any = None
        self._publisher: Any = None  # one connection: publishes in call order
        self._publish_lock = asyncio.Lock()
        self._listener: Any = None
        self._channels: dict[str, str] = {}  # item -> channel, for the subscribed rooms
        self._items: dict[str, str] = {}  # channel -> item
        self._big: deque[tuple[str, str]] = deque()  # events behind a read-back
        self._reader: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------

    async def start(self, sink: EventSink) -> None:
        self._sink = sink
        try:
            self._pool = await asyncpg.create_pool(
                self._url, min_size=1, max_size=4, command_timeout=self._timeout
            )
            async with self._pool.acquire() as conn:
                await conn.execute(SCHEMA.format(s=self._s, max_notify=MAX_NOTIFY_BYTES))
            self._publisher = await asyncpg.connect(self._url, command_timeout=self._timeout)
            self._listener = await asyncpg.connect(self._url, command_timeout=self._timeout)
            await self._beat()
        except (*PG_ERRORS, asyncpg.PostgresError) as exc:
            await self.stop()
            raise BackendUnavailable(f"PostgreSQL: {exc}") from exc
        self._heartbeat = asyncio.get_running_loop().create_task(self._heartbeats())

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        if self._pool is not None:
            try:
                async with self._pool.acquire() as conn:
                    await conn.execute(
                        f"DELETE FROM {self._s}.presence WHERE node = $1", self.node_id
                    )
                    await conn.execute(f"DELETE FROM {self._s}.nodes WHERE node = $1", self.node_id)
            except (*PG_ERRORS, asyncpg.PostgresError):
                pass  # its rows stop counting once its heartbeat is old
        for conn in (self._listener, self._publisher):
            if conn is not None:
                await conn.close(timeout=self._timeout)
        self._listener = self._publisher = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        self._sink = None

    async def ready(self) -> bool:
        if self._listener is None or self._listener.is_closed():
            return False
        try:
            await self._query("fetchval", "SELECT 1")
        except BackendUnavailable:
            return False
        return True

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self._ttl_ms / 3000)
            try:
                await self._beat()
            except (*PG_ERRORS, asyncpg.PostgresError) as exc:
                log.warning("presence heartbeat failed: %s", exc)

    async def _beat(self) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                f"INSERT INTO {self._s}.nodes VALUES ($1, {self._s}.now_ms()) "
                "ON CONFLICT (node) DO UPDATE SET seen_ms = excluded.seen_ms",
                self.node_id,
            )

    # --- rooms ----------------------------------------------------------------

    def _channel(self, item_id: str) -> str:
        # Channel names stop at 63 bytes and item ids may reach 128: a digest (kept in
        # self._channels for the subscribed rooms, so a publish rarely computes it).
        return f"ir_{self._schema[:20]}_{hashlib.sha1(item_id.encode()).hexdigest()[:32]}"

    async def subscribe(self, item_id: str) -> None:
        if item_id in self._channels:
            return
        channel = self._channel(item_id)
        self._channels[item_id] = channel
        self._items[channel] = item_id
        try:
            await self._listener.add_listener(channel, self._on_notify)
        except PG_ERRORS as exc:
            del self._channels[item_id], self._items[channel]
            raise BackendUnavailable(str(exc)) from exc

    async def unsubscribe(self, item_id: str) -> None:
        channel = self._channels.pop(item_id, None)
        if channel is None:
            return
        del self._items[channel]
        try:
            await self._listener.remove_listener(channel, self._on_notify)
        except PG_ERRORS:
            pass  # a lost listener listens to nothing

    # --- publishing -----------------------------------------------------------

    async def publish(
        self, item_id: str, sender: Sender, data: bytes, ref: str | None, id: str | None = None
    ) -> Published:
        async with self._publish_lock:  # taken before any await: call order is kept
            conn = self._publisher
            if conn is None or conn.is_closed():
                raise BackendUnavailable("PostgreSQL: the publishing connection is closed")
            try:
                row = await conn.fetchrow(
                    f"SELECT * FROM {self._s}.publish($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    item_id,
                    sender.user,
                    sender.client_id,
                    ref,
                    data.decode(),
                    id,
                    self._history_size,
                    self._dedup_ms,
                    self._channels.get(item_id) or self._channel(item_id),
                )
            except asyncpg.InterfaceError as exc:
                raise BackendUnavailable(str(exc)) from exc
            except PG_ERRORS as exc:
                raise OutcomeUnknown(str(exc)) from exc
        if row["kind"] == 2:
            raise ItemClosed(item_id)
        if row["kind"] == 0:
            return Published(row["seq"], row["epoch"])
        kept = row["data"].encode() if row["data"] is not None else data
        original = Message(
            item_id, row["seq"], row["ts"], Sender(sender.user, row["client_id"]), kept, None, id
        )
        return Published(row["seq"], row["epoch"], original)

    async def relay(self, item_id: str, sender: Sender, payload: bytes) -> None:
        head = orjson.dumps([sender.user, sender.client_id]).decode()
        body = base64.b64encode(payload).decode()
        await self._query(
            "execute", "SELECT pg_notify($1, $2)", self._channel(item_id), f"b{head}\n{body}"
        )

    async def control(
        self, item_id: str, action: str, user: str | None, ban_s: float = 0.0
    ) -> None:
        payload = "c" + orjson.dumps([action, user]).decode()
        s = self._s
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if action in ("open", "close"):
                    await conn.execute(f"SELECT {s}.room($1)", item_id)
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
                    await conn.execute("SELECT pg_notify($1, $2)", self._channel(item_id), payload)
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
        payload = "p" + orjson.dumps(["join", member.user, member.client_id]).decode()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    f"INSERT INTO {self._s}.presence VALUES ($1, $2, $3, $4) "
                    "ON CONFLICT (item, client_id) DO NOTHING",
                    item_id,
                    member.client_id,
                    member.user,
                    self.node_id,
                )
                await conn.execute("SELECT pg_notify($1, $2)", self._channel(item_id), payload)
        except PG_ERRORS as exc:
            raise BackendUnavailable(str(exc)) from exc

    async def leave(self, item_id: str, member: Sender) -> None:
        payload = "p" + orjson.dumps(["leave", member.user, member.client_id]).decode()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                gone = await conn.fetchval(
                    f"DELETE FROM {self._s}.presence WHERE item = $1 AND client_id = $2 "
                    "RETURNING 1",
                    item_id,
                    member.client_id,
                )
                if gone:
                    await conn.execute("SELECT pg_notify($1, $2)", self._channel(item_id), payload)
        except (*PG_ERRORS, asyncpg.PostgresError) as exc:
            # Never raises: the row stops counting when this process stops beating.
            log.warning("room %s: leave of %s not stored: %s", item_id, member.client_id, exc)

    # --- reading --------------------------------------------------------------

    async def snapshot(
        self, item_id: str, since: int | None, epoch: str | None = None, limit: int = 100
    ) -> Snapshot:
        s = self._s
        try:
            async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
                room = await conn.fetchrow(f"SELECT * FROM {s}.room($1)", item_id)
                members = tuple(
                    Sender(r["user_id"], r["client_id"])
                    for r in await conn.fetch(
                        f"SELECT p.user_id, p.client_id FROM {s}.presence p "
                        f"JOIN {s}.nodes n ON n.node = p.node "
                        f"WHERE p.item = $1 AND n.seen_ms > {s}.now_ms() - $2 "
                        "ORDER BY p.client_id",
                        item_id,
                        self._ttl_ms,
                    )
                )
                room_epoch, seq = room["epoch"], room["seq"]
                if since is None:
                    return Snapshot(seq, room_epoch, members, (), True)
                recovered = True
                if since > seq or (epoch is not None and epoch != room_epoch):
                    since, recovered = 0, False
                messages = await self._page(conn, item_id, since, seq, limit)
                if recovered and since < seq and (not messages or messages[0].seq != since + 1):
                    recovered = False
                return Snapshot(seq, room_epoch, members, messages, recovered)
        except PG_ERRORS as exc:
            raise BackendUnavailable(str(exc)) from exc

    async def history(
        self, item_id: str, epoch: str, after: int, upto: int, limit: int
    ) -> tuple[Message, ...] | None:
        try:
            async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
                room_epoch = await conn.fetchval(
                    f"SELECT epoch FROM {self._s}.rooms WHERE item = $1", item_id
                )
                if room_epoch != epoch:
                    return None
                return await self._page(conn, item_id, after, upto, limit)
        except PG_ERRORS as exc:
            raise BackendUnavailable(str(exc)) from exc

    async def _page(
        self, conn: Any, item_id: str, after: int, upto: int, limit: int
    ) -> tuple[Message, ...]:
        rows = await conn.fetch(
            f"SELECT seq, ts, user_id, client_id, data, pub_id FROM {self._s}.messages "
            "WHERE item = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4",
            item_id,
            after,
            upto,
            limit,
        )
        return tuple(
            Message(
                item_id,
                r["seq"],
                r["ts"],
                Sender(r["user_id"], r["client_id"]),
                r["data"].encode(),
                None,
                r["pub_id"],
            )
            for r in rows
        )

    async def _query(self, method: str, query: str, *args: Any) -> Any:
        """One statement on a pooled connection (``method``: fetchval, fetchrow, execute)."""
        try:
            async with self._pool.acquire() as conn:
                return await getattr(conn, method)(query, *args)
        except PG_ERRORS as exc:
            raise BackendUnavailable(str(exc)) from exc

    # --- events ---------------------------------------------------------------

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        item_id = self._items.get(channel)
        if item_id is None or self._sink is None:
            return
        if payload[0] == "r" or self._big:
            # A reference must be read back before what follows it is delivered: from
            # here on, this process's events wait in line behind the read.
            self._big.append((item_id, payload))
            if self._reader is None or self._reader.done():
                self._reader = asyncio.get_running_loop().create_task(self._read_big())
            return
        self._deliver(item_id, payload)

    async def _read_big(self) -> None:
        while self._big:
            item_id, payload = self._big[0]
            if payload[0] == "r":
                _, head = payload[1:].split("\n", 1)
                message = self._message(item_id, head, b"")
                try:
                    data = await self._query(
                        "fetchval",
                        f"SELECT data FROM {self._s}.messages WHERE item = $1 AND seq = $2",
                        item_id,
                        message.seq,
                    )
                except BackendUnavailable as exc:
                    log.warning("room %s: seq %d not read back: %s", item_id, message.seq, exc)
                    data = None
                self._big.popleft()
                if data is not None and self._sink is not None:
                    self._sink(
                        Message(
                            item_id,
                            message.seq,
                            message.ts,
                            message.sender,
                            data.encode(),
                            message.ref,
                            message.id,
                        )
                    )
            else:
                self._big.popleft()
                self._deliver(item_id, payload)

    def _deliver(self, item_id: str, payload: str) -> None:
        assert self._sink is not None
        kind, rest = payload[0], payload[1:]
        event: Event
        if kind == "m":
            _, head, data = rest.split("\n", 2)
            event = self._message(item_id, head, data.encode())
        elif kind == "p":
            action, user, client_id = orjson.loads(rest)
            event = Presence(item_id, action, Sender(user, client_id))
        elif kind == "b":
            head, body = rest.split("\n", 1)
            user, client_id = orjson.loads(head)
            event = Relay(item_id, Sender(user, client_id), base64.b64decode(body))
        elif kind == "c":
            action, user = orjson.loads(rest)
            event = Control(item_id, action, user)
        else:
            return
        self._sink(event)

    @staticmethod
    def _message(item_id: str, head: str, data: bytes) -> Message:
        seq, ts, user, client_id, ref, id = orjson.loads(head)
        return Message(item_id, seq, ts, Sender(user, client_id), data, ref or None, id or None)
