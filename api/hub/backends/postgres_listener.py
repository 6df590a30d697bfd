"""The listening connection: one per process, a channel per room with members here, and
what this process has delivered of each room.

NOTIFY is delivered at commit, in commit order, and a publish holds its room's row
until it commits, so a room's messages arrive in seq order. Most notifications are
handed to the hub as they arrive; those that need the database first wait in their
room's line, in order, for one worker task: a message after a gap (the gap is filled
from history first, refs included, so the sender still gets its ack), a payload too
big for NOTIFY (read back), and whatever arrives behind them.

What keeps members' views whole when the connection is lost (PostgreSQL restarted, the
connection terminated, a partition found by the liveness probe): from the loss until
every room is checked again on a new connection the process is not ready and refuses
publishes (``unavailable``: certainly not published). The check (``{s}.resync``) starts
a new epoch if the database lost the room (emptied, or behind what was delivered),
which closes the room's members with 1012; otherwise it fills in what was missed from
history. Presence seen after a reconnect is announced as joins at once, but a member
missing from the table is announced gone only if it is still missing a presence TTL
later: the other processes may not have registered it again yet (no flapping).
"""

import asyncio
import base64
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from itemrooms.api.hub.backends.base import (
    BackendUnavailable,
    Control,
    EpochChange,
    Event,
    EventSink,
    Message,
    Presence,
    Relay,
    Sender,
)
from itemrooms.api.hub.backends.postgres_publish import PG_ERRORS
from itemrooms.api.hub.backends.postgres_schema import channel
from itemrooms.api.hub.backends.presence_view import PresenceView

log = logging.getLogger("itemrooms.postgres")

RETRY_CAP_S = 2.0
GAP_PAGE = 500  # history rows read at a time to fill a gap

Query = Callable[..., Awaitable[Any]]  # (method, sql, *args): PostgresBackend._query


@dataclass(slots=True)
class _Room:
    """What this process has delivered of a subscribed room."""

    channel: str
    epoch: str = ""
    last_seq: int = 0
    loaded: bool = False  # its state was read after its LISTEN
    presence: PresenceView = field(default_factory=PresenceView)  # what was announced
    # Notifications waiting for the worker, in arrival order; None while they are
    # handled as they come.
    waiting: deque[str] | None = field(default_factory=deque)


class Listener:
    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        query: Query,
        schema: str,
        schema_name: str,
        ttl_ms: int,
        on_reconnect: Callable[[], Awaitable[None]],
    ) -> None:
        self._connect = connect
        self._query = query
        self._s = schema
        self._schema_name = schema_name
        self._ttl_ms = ttl_ms
        self._on_reconnect = on_reconnect  # presence repair, schema check: the backend's
        self._conn: Any = None
        # One statement at a time on the connection (LISTEN, UNLISTEN, the probe):
        # asyncpg refuses a second while one is in progress.
        self._using = asyncio.Lock()
        self._sink: EventSink | None = None
        self.rooms: dict[str, _Room] = {}  # subscribed rooms
        self._items: dict[str, str] = {}  # channel -> item
        # False from a lost connection (or a failed read) until every room is checked.
        self.live = False
        self._generation = 0  # counts losses: a subscribe across one must start over
        self._stale: set[str] = set()  # rooms to check before going live again
        self._slow: deque[str] = deque()  # rooms with notifications for the worker
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._stopping = False

    # --- lifecycle ----------------------------------------------------------

    async def start(self, sink: EventSink) -> None:
        self._sink = sink
        self._conn = await self._open()
        self.live = True
        self._worker = asyncio.get_running_loop().create_task(
            self._work(), name="itemrooms postgres listener"
        )

    async def stop(self) -> None:
        self._stopping = True
        self._sink = None
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def _open(self) -> Any:
        conn = await self._connect()
        conn.add_termination_listener(self._terminated)
        return conn

    def _terminated(self, conn: Any) -> None:
        if conn is self._conn and not self._stopping:
            self.lost("the listening connection closed", reconnect=True)

    async def probe(self, timeout: float) -> None:
        """A connection that went silent (a partition, a stalled server) tells nobody:
        ask it something; no answer in time counts as lost."""
        conn = self._conn
        if conn is None or not self.live:
            return
        try:
            async with asyncio.timeout(timeout), self._using:
                await conn.fetchval("SELECT 1")
        except PG_ERRORS as exc:
            if conn is self._conn:
                self.lost(f"the listening connection did not answer: {exc!r}", reconnect=True)

    def lost(self, why: str, reconnect: bool = False) -> None:
        """Until every room is checked again: not ready, publishes refused, and every
        room's notifications held in its line."""
        if self._stopping:
            return
        if self.live:
            log.warning("PostgreSQL: %s; not ready until every room is checked again", why)
        self.live = False
        self._generation += 1
        if reconnect and self._conn is not None:
            conn, self._conn = self._conn, None
            conn.terminate()
        for item_id, room in self.rooms.items():
            if room.waiting is None:
                room.waiting = deque()
            if room.loaded:
                self._stale.add(item_id)
        self._wake.set()

    # --- rooms --------------------------------------------------------------

    def floor(self, item_id: str) -> int:
        """The highest seq delivered in the room (0 when not subscribed)."""
        room = self.rooms.get(item_id)
        return room.last_seq if room is not None else 0

    async def subscribe(self, item_id: str) -> tuple[Sender, ...]:
        conn = self._conn  # this one: a loss meanwhile closes it (and add_listener fails)
        if not self.live or conn is None:
            raise BackendUnavailable("reconnecting to PostgreSQL")
        generation = self._generation
        room = _Room(channel(self._schema_name, item_id))
        self.rooms[item_id] = room
        self._items[room.channel] = item_id
        try:
            # LISTEN is in force when this returns: whatever commits from now on is
            # notified, and whatever committed before is in the state read next.
            async with self._using:
                await conn.add_listener(room.channel, self._notified)
            rows = await self._query(
                "fetch", f"SELECT * FROM {self._s}.snapshot($1, -1, NULL, 0)", item_id
            )
            members = await self._query(
                "fetch",
                f"SELECT user_id, client_id FROM {self._s}.presence WHERE item = $1",
                item_id,
            )
            if generation != self._generation:
                raise BackendUnavailable("the listening connection was lost meanwhile")
        except (*PG_ERRORS, BackendUnavailable) as exc:
            await self.unsubscribe(item_id)
            if isinstance(exc, BackendUnavailable):
                raise
            raise BackendUnavailable(f"cannot subscribe to {item_id}: {exc}") from exc
        room.epoch, room.last_seq = rows[0]["epoch"], rows[0]["seq"]
        room.presence.members = {
            r["client_id"]: Sender(r["user_id"], r["client_id"]) for r in members
        }
        room.loaded = True
        self._queue(item_id)  # what arrived meanwhile, in order
        return tuple(room.presence.members.values())

    async def unsubscribe(self, item_id: str) -> None:
        room = self.rooms.pop(item_id, None)
        if room is None:
            return
        self._stale.discard(item_id)
        self._items.pop(room.channel, None)
        conn = self._conn
        if conn is not None and not conn.is_closed():
            try:
                async with self._using:
                    await conn.remove_listener(room.channel, self._notified)
            except PG_ERRORS:
                pass  # a lost connection listens to nothing

    # --- notifications ------------------------------------------------------

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        item_id = self._items.get(channel)
        room = self.rooms.get(item_id) if item_id is not None else None
        if item_id is None or room is None or conn is not self._conn:
            return
        if room.waiting is not None:
            room.waiting.append(payload)
            return
        try:
            handled = self._handle_now(item_id, room, payload)
        except Exception:  # a bug: one notification must not stop the room for good
            log.exception("room %s: a notification could not be handled", item_id)
            return
        if not handled:
            room.waiting = deque([payload])
            self._queue(item_id)

    def _queue(self, item_id: str) -> None:
        self._slow.append(item_id)
        self._wake.set()

    def _handle_now(self, item_id: str, room: _Room, payload: str) -> bool:
        """Hand an event to the hub at once; False when it needs the database first."""
        kind, rest = payload[0], payload[1:]
        if kind == "m":
            epoch, head, data = rest.split("\n", 2)
            seq, ts, user, cid, ref, id = orjson.loads(head)
            if epoch != room.epoch:
                # Another process started a new epoch (the database lost the room):
                # everyone here resumes; this message is in the new epoch's history.
                self._new_epoch(item_id, room, epoch, seq)
            elif seq > room.last_seq + 1:
                return False  # a gap: filled from history first
            elif seq == room.last_seq + 1:
                room.last_seq = seq
                message = Message(
                    item_id, seq, ts, Sender(user, cid), data.encode(), ref or None, id or None
                )
                self._emit(message)
            # else: already delivered (filled in from history)
        elif kind == "p":
            action, user, cid = orjson.loads(rest)
            self._presence(item_id, room, action, Sender(user, cid))
        elif kind == "b":
            head, body = rest.split("\n", 1)
            user, cid = orjson.loads(head)
            self._emit(Relay(item_id, Sender(user, cid), base64.b64decode(body)))
        elif kind == "c":
            action, user = orjson.loads(rest)
            self._emit(Control(item_id, action, user))
        elif kind in "rB":
            return False  # a reference: read back first
        return True

    async def _handle(self, item_id: str, room: _Room, payload: str) -> None:
        """What ``_handle_now`` could not do: read back, fill a gap, then deliver."""
        kind, rest = payload[0], payload[1:]
        if kind == "B":
            head, body_id = rest.split("\n", 1)
            body = await self._read_back(int(body_id))
            if body is not None:  # else gone after its time: relays are not kept
                user, cid = orjson.loads(head)
                self._emit(Relay(item_id, Sender(user, cid), body))
            return
        if kind == "r":
            epoch, seq_text, body_id = rest.split("\n")
            seq = int(seq_text)
            if epoch != room.epoch:
                self._new_epoch(item_id, room, epoch, seq)  # as for "m" (_handle_now)
                return
            if seq <= room.last_seq:
                return  # delivered meanwhile (a gap fill)
            body = await self._read_back(int(body_id))
            if body is None:  # its read-back expired: history has it, if anyone
                await self._fill_gap(item_id, room, seq + 1)
                return
            payload = "m" + epoch + "\n" + body.decode()
        if self._handle_now(item_id, room, payload):
            return
        seq = orjson.loads(payload.split("\n", 2)[1])[0]
        await self._fill_gap(item_id, room, seq)
        if not self._handle_now(item_id, room, payload):  # history no longer held them
            log.warning("room %s: seqs up to %d were no longer in history", item_id, seq - 1)
            room.last_seq = seq - 1
            self._handle_now(item_id, room, payload)

    async def _read_back(self, body_id: int) -> bytes | None:
        body: bytes | None = await self._query(
            "fetchval", f"SELECT body FROM {self._s}.payloads WHERE id = $1", body_id
        )
        return body

    async def _fill_gap(self, item_id: str, room: _Room, before: int) -> None:
        """Deliver from history the messages between the last delivered and ``before``,
        refs included, so a sender whose copy went by meanwhile still gets its ack."""
        while room.last_seq < before - 1:
            rows = await self._query(
                "fetch",
                f"SELECT * FROM {self._s}.history($1, $2, $3, $4, $5)",
                item_id,
                room.epoch,
                room.last_seq,
                before - 1,
                GAP_PAGE,
            )
            if rows and rows[0]["seq"] == -1:  # the room moved to a new epoch meanwhile
                await self._resync(item_id, room)
                return
            for row in rows:
                if row["seq"] > room.last_seq:
                    room.last_seq = row["seq"]
                    self._emit(row_message(item_id, row, with_ref=True))
            if len(rows) < GAP_PAGE:
                return

    def _new_epoch(self, item_id: str, room: _Room, epoch: str, seq: int) -> None:
        room.epoch, room.last_seq = epoch, seq
        self._emit(EpochChange(item_id, epoch))

    def _presence(self, item_id: str, room: _Room, event: str, member: Sender) -> None:
        if room.presence.change(event, member):  # only news goes on
            self._emit(Presence(item_id, event, member))

    def _emit(self, event: Event) -> None:
        if self._sink is not None:
            self._sink(event)

    # --- the worker: slow notifications and repairs ---------------------------

    async def _work(self) -> None:
        delay = 0.05
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            try:
                if not self.live:
                    await self._repair()
                while self._slow and self.live:
                    item_id = self._slow.popleft()
                    room = self.rooms.get(item_id)
                    if room is not None and room.loaded:
                        await self._drain(item_id, room)
                delay = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not isinstance(exc, (*PG_ERRORS, BackendUnavailable)):
                    log.exception("PostgreSQL listener: unexpected failure; checking every room")
                # Whatever failed, every room is checked again from here: nothing is left
                # half done, and a bug must not stop delivery for good.
                self.lost(f"{exc!r}", reconnect=self._conn is None or self._conn.is_closed())
                await asyncio.sleep(delay)  # back off while the database is away
                delay = min(delay * 2, RETRY_CAP_S)
                self._wake.set()

    async def _drain(self, item_id: str, room: _Room) -> None:
        waiting = room.waiting
        while waiting:
            if item_id in self._stale or self.rooms.get(item_id) is not room:
                return  # to be checked first (the repair drains it), or unsubscribed
            try:
                await self._handle(item_id, room, waiting[0])
            except (*PG_ERRORS, BackendUnavailable):
                raise  # kept at the head of the line: handled after the repair
            except Exception:  # a bug: one notification must not stop the room for good
                log.exception("room %s: a notification could not be handled", item_id)
            waiting.popleft()
        if item_id not in self._stale:
            room.waiting = None

    async def _repair(self) -> None:
        """A new connection if the old one is gone, then every room checked again."""
        if self._conn is None or self._conn.is_closed():
            self._conn = None
            await self._on_reconnect()  # the schema first: the database may be new
            self._conn = conn = await self._open()
            try:
                async with self._using:
                    for channel_name in [r.channel for r in self.rooms.values()]:
                        await conn.add_listener(channel_name, self._notified)
            except BaseException:
                self._conn = None
                conn.terminate()
                raise
        else:
            await self._on_reconnect()
        for item_id in list(self._stale):
            stale = self.rooms.get(item_id)
            if stale is not None:
                await self._resync(item_id, stale)
            self._stale.discard(item_id)
            if stale is not None:
                await self._drain(item_id, stale)
        self.live = True
        self._slow.extend(self.rooms)  # anything that queued behind the repair
        log.info("PostgreSQL connection restored")

    async def _resync(self, item_id: str, room: _Room) -> None:
        """After a loss: check the epoch, fill in missed messages, fix presence."""
        rows = await self._query(
            "fetch",
            f"SELECT * FROM {self._s}.resync($1, $2, $3)",
            item_id,
            room.epoch,
            room.last_seq,
        )
        epoch, seq = rows[0]["epoch"], rows[0]["seq"]
        if epoch != room.epoch:
            log.warning("room %s: PostgreSQL lost its sequence; new epoch %s", item_id, epoch)
            self._new_epoch(item_id, room, epoch, seq)
        elif seq > room.last_seq:
            await self._fill_gap(item_id, room, seq + 1)
        rows = await self._query(
            "fetch", f"SELECT * FROM {self._s}.snapshot($1, -1, NULL, 0)", item_id
        )
        current = [Sender(r["user_id"], r["client_id"]) for r in rows[1:]]
        deadline = asyncio.get_running_loop().time() + self._ttl_ms / 1000
        for member in room.presence.recheck(current, deadline):
            self._emit(Presence(item_id, "join", member))

    async def settle_suspects(self) -> None:
        """Members still missing from the table a TTL after a reconnect are gone."""
        now = asyncio.get_running_loop().time()
        for item_id, room in list(self.rooms.items()):
            due = room.presence.due(now)
            if not due:
                continue
            rows = await self._query(
                "fetch",
                f"SELECT client_id FROM {self._s}.presence WHERE item = $1 AND client_id = ANY($2)",
                item_id,
                due,
            )
            present = {r["client_id"] for r in rows}
            for cid in due:
                gone = room.presence.settle(cid, cid in present)
                if gone is not None:
                    self._emit(Presence(item_id, "leave", gone))


def row_message(item_id: str, row: Any, with_ref: bool = False) -> Message:
    """A history row as a message; its ref only for a gap fill (the sender's ack)."""
    return Message(
        item_id,
        row["seq"],
        row["ts"],
        Sender(row["user_id"], row["client_id"]),
        row["data"].encode(),
        row["ref"] if with_ref else None,
        row["pub_id"],
    )
