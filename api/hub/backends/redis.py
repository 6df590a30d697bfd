"""Redis backend: one room across many processes and machines.

Per room: a meta hash (epoch and seq), a Stream (history, entry id ``<seq>-0``),
a presence hash, dedup keys for publish ids, and a pub/sub channel; the Lua
scripts in redis_scripts.py change them atomically. Per process: ONE pub/sub
connection, subscribed to the rooms that have local members, read by one
listener task, plus a small command pool; never a Redis connection per client.

What keeps members' views whole when the pub/sub connection drops and comes
back (redis-py re-subscribes by itself): every subscribed room remembers its
epoch, the last seq and the members it delivered. Until every room is checked
again the process is not ready (``/readyz`` 503) and refuses publishes
(``unavailable``: certainly not published). The check (RESYNC) starts a new
epoch if Redis lost the room (came back empty, or from older data than was
delivered), which closes the room's members with 1012 so they resume; otherwise
it replays missed messages from the Stream. Messages arriving with a gap are
filled from the Stream first, and duplicates are dropped, so the hub always sees
each room's seqs in order, once. Presence changes seen after a reconnect are
announced as joins at once, but a member missing from Redis is announced as
gone only if it is still missing a presence TTL later: the other processes may
simply not have registered it again yet (no leave/join flapping).

Presence of this process's own members is kept true by redis_presence.py.
"""

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson

from itemrooms.api.hub.backends import redis_scripts
from itemrooms.api.hub.backends.base import (
    BANNED,
    CLOSED,
    BackendUnavailable,
    Control,
    EpochChange,
    Event,
    EventSink,
    ItemClosed,
    Message,
    Presence,
    PresencePage,
    Published,
    Relay,
    Sender,
    Snapshot,
)

try:
    from redis import asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
except ImportError as exc:  # pragma: no cover - exercised by hand without the extra
    raise ImportError("the Redis backend needs redis-py: pip install 'itemrooms[redis]'") from exc

from itemrooms.api.hub.backends.presence_view import PresenceView
from itemrooms.api.hub.backends.redis_presence import RedisPresence  # needs redis-py
from itemrooms.api.hub.backends.redis_publish import REDIS_ERRORS, PublishPipeline

log = logging.getLogger("itemrooms.redis")

SUBSCRIBE_TIMEOUT_S = 5.0
LISTEN_POLL_S = 1.0
RETRY_CAP_S = 2.0
STOP_WAIT_S = 5.0
POOL_SIZE = 32


@dataclass(slots=True)
class _Room:
    """What this process has delivered of a subscribed room."""

    confirmed: asyncio.Future[None]
    epoch: str = ""
    epoch_raw: bytes = b""
    last_seq: int = 0
    kept_at: float = 0.0  # when its keys' TTL was last pushed back
    presence: PresenceView = field(default_factory=PresenceView)  # what was announced

    def set_epoch(self, epoch: str) -> None:
        self.epoch, self.epoch_raw = epoch, epoch.encode()


class RedisBackend:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "itemrooms:",
        history_size: int = 1000,
        history_ttl_s: float = 7 * 86400,
        presence_ttl_s: float = 15.0,
        dedup_s: float = 300.0,
        command_timeout_s: float = 5.0,
    ) -> None:
        self._prefix = prefix
        self._history_size = history_size
        self._history_ttl_ms = int(history_ttl_s * 1000)
        self._ttl_ms = int(presence_ttl_s * 1000)
        self._dedup_ms = int(dedup_s * 1000)
        self._timeout_s = command_timeout_s
        self.node_id = secrets.token_hex(8)
        self._epoch_node = self.node_id[:8]
        # A bounded pool that makes callers wait for a free connection, rather than
        # opening one per concurrent caller (or failing with "Too many connections").
        # No automatic retries: a retried publish that Redis had applied is a second
        # message. What is safe to repeat is repeated by its caller.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_SIZE,
            timeout=command_timeout_s,
            socket_connect_timeout=2,
            socket_timeout=command_timeout_s,
            health_check_interval=5,
            client_name=f"itemrooms-{self.node_id}",  # tells operators who is connected
            retry=Retry(NoBackoff(), 0),
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        self._pubsub = self._redis.pubsub()
        self._scripts = {
            name: self._redis.register_script(getattr(redis_scripts, name))
            for name in ("PUBLISH", "SNAPSHOT", "HISTORY", "RESYNC", "PRESENCE")
        }
        self._publishes = PublishPipeline(self._redis, self._scripts["PUBLISH"])
        self.presence = RedisPresence(self._redis, prefix, self.node_id, self._ttl_ms)
        self._rooms: dict[str, _Room] = {}  # subscribed rooms
        self._sink: EventSink | None = None
        # False from a lost pub/sub connection until every repair after it is done.
        self._live = False
        # Set by stop(): the loops end even if a driver turned their cancellation
        # into an error they would otherwise retry.
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._control: asyncio.Future[None] | None = None
        # Repairs left to do after a reconnect (retried until they succeed).
        self._reconnected = False
        # Not yet (or, after a lost connection, not again) subscribed by redis-py.
        self._resubscribing = True
        self._resync_rooms: set[str] = set()  # re-subscribed, to be checked
        self._unsynced: set[str] = set()  # subscribed when the connection dropped

    # --- keys ---------------------------------------------------------------

    def _key(self, kind: str, item_id: str) -> str:
        return f"{self._prefix}{kind}:{item_id}"

    def _channel(self, item_id: str) -> str:
        return self._key("room", item_id)

    def _dedup_key(self, item_id: str, user: str, id: str) -> str:
        # Neither an item id nor a publish id holds a newline: the user goes last.
        return f"{self._prefix}dedup:{item_id}\n{id}\n{user}"

    # --- lifecycle ----------------------------------------------------------

    async def start(self, sink: EventSink) -> None:
        try:
            await asyncio.wait_for(self._redis.ping(), self._timeout_s)
        except REDIS_ERRORS as exc:
            raise BackendUnavailable(f"cannot reach Redis: {exc}") from exc
        self._sink = sink
        await self.presence.heartbeat()
        loop = asyncio.get_running_loop()
        self._control = loop.create_future()
        # A control channel keeps the pub/sub connection open while no room is subscribed.
        await self._pubsub.subscribe(f"{self._prefix}control")
        self._tasks = [
            loop.create_task(self._listen(), name="itemrooms redis listener"),
            loop.create_task(self._heartbeats(), name="itemrooms redis heartbeat"),
        ]
        await asyncio.wait_for(self._control, SUBSCRIBE_TIMEOUT_S)
        self._live = True

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=STOP_WAIT_S)
            if pending:
                log.warning("Redis backend: %d tasks did not stop", len(pending))
        await self._publishes.stop()
        self._sink = None
        with contextlib.suppress(*REDIS_ERRORS):
            await self.presence.stop()
        with contextlib.suppress(*REDIS_ERRORS):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._redis.aclose(close_connection_pool=True)

    async def ready(self) -> bool:
        if not self._live:
            return False
        try:
            return bool(await asyncio.wait_for(self._redis.ping(), 1.0))
        except REDIS_ERRORS:
            return False

    # --- rooms --------------------------------------------------------------

    async def subscribe(self, item_id: str) -> tuple[Sender, ...]:
        if not self._live:
            raise BackendUnavailable("reconnecting to Redis")
        room = _Room(confirmed=asyncio.get_running_loop().create_future())
        self._rooms[item_id] = room
        try:
            await self._pubsub.subscribe(self._channel(item_id))
            await asyncio.wait_for(asyncio.shield(room.confirmed), SUBSCRIBE_TIMEOUT_S)
        except REDIS_ERRORS as exc:
            await self.unsubscribe(item_id)
            raise BackendUnavailable(f"cannot subscribe to {item_id}: {exc}") from exc
        return tuple(room.presence.members.values())

    async def unsubscribe(self, item_id: str) -> None:
        self._rooms.pop(item_id, None)
        self._unsynced.discard(item_id)
        with contextlib.suppress(*REDIS_ERRORS):
            await self._pubsub.unsubscribe(self._channel(item_id))

    async def publish(
        self, item_id: str, sender: Sender, data: bytes, ref: str | None, id: str | None = None
    ) -> Published:
        if not self._live:
            # Until the listener is back and every room checked, a publish could reuse a
            # seq or lose its ack: refuse it (certainly not published) instead.
            raise BackendUnavailable("reconnecting to Redis")
        meta = self._key("meta", item_id)
        room = self._rooms.get(item_id)
        keys = [meta, self._key("history", item_id), self._channel(item_id)]
        keys.append(meta if id is None else self._dedup_key(item_id, sender.user, id))
        keys.append(self._key("closed", item_id))
        args: list[Any] = [sender.user, sender.client_id, ref or "", data, self._history_size]
        args += [self._history_ttl_ms, id or "", self._dedup_ms, self._epoch_node]
        args.append(room.last_seq if room is not None else 0)
        result = await self._publishes.publish(keys, args)
        if result[0] == 2:
            raise ItemClosed(item_id)
        seq, epoch = int(result[1]), _text(result[2])
        if not result[0]:
            return Published(seq, epoch)
        ts, client_id, stored = int(result[3]), _text(result[4]), result[5]
        # Gone from history: a retry carries the same data (an id names one message).
        kept = stored if stored is not None else data
        original = Message(item_id, seq, ts, Sender(sender.user, client_id), kept, None, id)
        return Published(seq, epoch, original)

    async def relay(self, item_id: str, sender: Sender, payload: bytes) -> None:
        head = orjson.dumps([sender.user, sender.client_id])
        try:
            await self._redis.publish(self._channel(item_id), b"b" + head + b"\n" + payload)
        except REDIS_ERRORS as exc:
            raise BackendUnavailable(str(exc)) from exc

    async def control(
        self, item_id: str, action: str, user: str | None, ban_s: float = 0.0
    ) -> None:
        # One MULTI: what must hold is stored before any process hears of the kick or close.
        async with self._redis.pipeline(transaction=True) as pipe:
            if action == "open":
                pipe.delete(self._key("closed", item_id))
            elif action == "close":
                pipe.set(self._key("closed", item_id), b"1")
            elif ban_s > 0 and user is not None:
                pipe.set(self._ban_key(item_id, user), b"1", px=max(1, round(ban_s * 1000)))
            if action != "open":
                pipe.publish(self._channel(item_id), b"c" + orjson.dumps([action, user]))
            try:
                await pipe.execute()
            except REDIS_ERRORS as exc:
                raise BackendUnavailable(str(exc)) from exc

    async def refusal(self, item_id: str, user: str) -> str | None:
        try:
            closed, banned = await self._redis.mget(
                self._key("closed", item_id), self._ban_key(item_id, user)
            )
        except REDIS_ERRORS as exc:
            raise BackendUnavailable(str(exc)) from exc
        if closed is not None:
            return CLOSED
        return BANNED if banned is not None else None

    def _ban_key(self, item_id: str, user: str) -> str:
        # A newline cannot be in an item id, so no two (item, user) pairs share a key.
        return f"{self._prefix}ban:{item_id}\n{user}"

    async def join(self, item_id: str, member: Sender) -> None:
        await self.presence.join(item_id, member)

    async def leave(self, item_id: str, member: Sender) -> None:
        await self.presence.leave(item_id, member)

    async def snapshot(
        self, item_id: str, since: int | None, epoch: str | None = None, limit: int = 100
    ) -> Snapshot:
        room = self._rooms.get(item_id)
        args = [self._epoch_node, room.last_seq if room is not None else 0, self._history_ttl_ms]
        args += [-1 if since is None else since, epoch or "", limit, "0"]
        keys = [self._key(k, item_id) for k in ("meta", "history", "presence")]
        result = await self._run("SNAPSHOT", keys, args)
        room_epoch, seq = _text(result[0]), int(result[1])
        if since is None:
            return Snapshot(seq, room_epoch, (), True)
        page = tuple(_entry_message(item_id, e) for e in result[4])
        return Snapshot(seq, room_epoch, page, bool(result[3]))

    async def presence_page(self, item_id: str, after: str | None, limit: int) -> PresencePage:
        keys = [self._key("users", item_id), self._key("ucount", item_id)]
        # One more than asked: whether there is a next page.
        count, flat = await self._run("PRESENCE", keys, [after or "", limit + 1])
        users = tuple((_text(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2))
        more = len(users) > limit
        users = users[:limit]
        return PresencePage(int(count), users, users[-1][0] if more else None)

    async def history(
        self, item_id: str, epoch: str, after: int, upto: int, limit: int
    ) -> tuple[Message, ...] | None:
        keys = [self._key("meta", item_id), self._key("history", item_id)]
        entries = await self._run("HISTORY", keys, [epoch, after, upto, limit])
        if entries is None:
            return None
        return tuple(_entry_message(item_id, e) for e in entries)

    # --- plumbing -----------------------------------------------------------

    async def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._scripts[script](keys=keys, args=args)
        except REDIS_ERRORS as exc:
            raise BackendUnavailable(f"Redis: {exc}") from exc

    async def _listen(self) -> None:
        """Read the pub/sub connection; on failure, retry until Redis is back.

        Everything that emits events runs in this one task, so each room's events
        keep their order, repairs after a reconnect included.
        """
        delay = 0.05
        while not self._stopping:
            try:
                try:
                    message = await self._pubsub.get_message(timeout=LISTEN_POLL_S)
                except REDIS_ERRORS as exc:
                    # The pub/sub connection itself: redis-py subscribes again as it
                    # reconnects, and every room is checked once it has.
                    self._lost(exc, resubscribe=True)
                else:
                    if message is not None:
                        await self._handle(message)
                    if not self._live or self._reconnected or self._resync_rooms:
                        await self._repair()
                    delay = 0.05
                    continue
            except asyncio.CancelledError:
                raise
            except (*REDIS_ERRORS, BackendUnavailable) as exc:
                # A command (a gap fill, a repair) while pub/sub stays up: nothing will be
                # subscribed again, so every room is checked again from here.
                self._lost(exc, resubscribe=False)
            except Exception:  # a bug must not stop delivery for every room
                log.exception("Redis listener: failed to handle a message")
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_CAP_S)

    def _lost(self, exc: BaseException, resubscribe: bool) -> None:
        """Until every room is checked again: not ready, and publishes refused."""
        if self._live:
            log.warning("Redis connection lost (%s); retrying", exc)
        self._live = False
        self._unsynced = set(self._rooms)
        if resubscribe:
            self._resubscribing = True  # the re-subscriptions will ask for the checks
        else:
            self._resync_rooms |= self._unsynced

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message["channel"].decode()
        if kind == "subscribe":
            await self._on_subscribed(channel)
        elif kind == "message" and channel.startswith(self._key("room", "")):
            item_id = channel[len(self._key("room", "")) :]
            room = self._rooms.get(item_id)
            if room is not None:
                await self._on_payload(item_id, room, message["data"])

    async def _on_subscribed(self, channel: str) -> None:
        if channel == f"{self._prefix}control":
            if self._control is not None and not self._control.done():
                self._control.set_result(None)
            else:  # re-subscribed by redis-py after a reconnect
                self._reconnected = True
            self._resubscribing = False
            return
        item_id = channel[len(self._key("room", "")) :]
        room = self._rooms.get(item_id)
        if room is None:
            return
        if room.confirmed.done():
            self._resync_rooms.add(item_id)  # re-subscribed after a reconnect
            return
        # The room's state as of now: messages up to this seq are older than any
        # member's welcome (the hub reads its snapshot after this), so none is lost.
        keys = [self._key(k, item_id) for k in ("meta", "history", "presence")]
        epoch, seq, presence = await self._run(
            "SNAPSHOT", keys, [self._epoch_node, 0, self._history_ttl_ms, -1, "", 0, "1"]
        )
        room.set_epoch(_text(epoch))
        room.last_seq = int(seq)
        room.presence.members = {m.client_id: m for m in _members(presence)}
        room.confirmed.set_result(None)
        # Its subscribe was under way when the connection dropped: what it read now is
        # as fresh as a check would make it (otherwise the process would never be ready).
        self._unsynced.discard(item_id)

    async def _repair(self) -> None:
        """After a reconnect (Redis may have restarted empty): our heartbeat and
        members, then each room's epoch, missed messages and presence."""
        if self._reconnected:
            self.presence.hold_reaping()
            await self.presence.heartbeat()
            if self.presence.dirty:
                await self.presence.reconcile()
            self._reconnected = False
        for item_id in list(self._resync_rooms):
            room = self._rooms.get(item_id)
            if room is not None:
                await self._resync(item_id, room)
            self._resync_rooms.discard(item_id)
            self._unsynced.discard(item_id)
        if not (self._live or self._resubscribing or self._reconnected or self._unsynced):
            self._live = True
            log.info("Redis connection restored")

    async def _resync(self, item_id: str, room: _Room) -> None:
        """After a reconnect: check the epoch, replay missed messages, fix presence."""
        keys = [self._key("meta", item_id), self._key("history", item_id)]
        args = [room.epoch, room.last_seq, self._epoch_node, self._history_ttl_ms]
        epoch_raw, seq_raw = await self._run("RESYNC", keys, args)
        epoch, seq = _text(epoch_raw), int(seq_raw)
        if epoch != room.epoch:
            log.warning("room %s: Redis lost its sequence; new epoch %s", item_id, epoch)
            self._new_epoch(item_id, room, epoch, seq)
        elif seq > room.last_seq:
            await self._fill_gap(item_id, room, seq + 1)
        presence = await self._redis.hgetall(self._key("presence", item_id))
        current = [Sender(orjson.loads(v)[0], _text(c)) for c, v in presence.items()]
        deadline = asyncio.get_running_loop().time() + self._ttl_ms / 1000
        for member in room.presence.recheck(current, deadline):
            self._emit(Presence(item_id, "join", member))

    def _new_epoch(self, item_id: str, room: _Room, epoch: str, seq: int) -> None:
        room.set_epoch(epoch)
        room.last_seq = seq
        self._emit(EpochChange(item_id, epoch))

    async def _on_payload(self, item_id: str, room: _Room, payload: bytes) -> None:
        kind, body = payload[:1], payload[1:]
        if kind == b"m":
            epoch_raw, _, rest = body.partition(b"\n")
            head_raw, _, data = rest.partition(b"\n")
            seq, ts, user, cid, ref, id = orjson.loads(head_raw)
            if epoch_raw != room.epoch_raw:
                # Another process started a new epoch (Redis lost the room): everyone here
                # resumes; this message is in the new epoch's history for them.
                self._new_epoch(item_id, room, epoch_raw.decode(), seq)
                return
            if seq <= room.last_seq:
                return  # already delivered (replayed after a reconnect)
            if seq > room.last_seq + 1:
                await self._fill_gap(item_id, room, seq)
                if room.epoch_raw != epoch_raw:
                    return
            room.last_seq = seq
            self._emit(Message(item_id, seq, ts, Sender(user, cid), data, ref or None, id or None))
        elif kind in (b"j", b"l"):
            user, cid = orjson.loads(body)
            self._presence(item_id, room, "join" if kind == b"j" else "leave", Sender(user, cid))
        elif kind == b"b":
            head_raw, _, raw = body.partition(b"\n")
            user, cid = orjson.loads(head_raw)
            self._emit(Relay(item_id, Sender(user, cid), raw))
        elif kind == b"c":
            action, user = orjson.loads(body)
            self._emit(Control(item_id, action, user))

    async def _fill_gap(self, item_id: str, room: _Room, before: int) -> None:
        """Deliver from history the messages between the last delivered and ``before``,
        refs included, so a sender whose copy went by meanwhile still gets its ack."""
        keys = [self._key("meta", item_id), self._key("history", item_id)]
        args = [room.epoch, room.last_seq, before - 1, max(self._history_size, 1) * 2]
        entries = await self._run("HISTORY", keys, args)
        if entries is None:  # the room moved to a new epoch meanwhile
            await self._resync(item_id, room)
            return
        for entry in entries:
            message = _entry_message(item_id, entry, with_ref=True)
            if message.seq > room.last_seq:
                room.last_seq = message.seq
                self._emit(message)
        if room.last_seq < before - 1:
            log.warning("room %s: seqs up to %d were no longer in history", item_id, before - 1)

    def _presence(self, item_id: str, room: _Room, event: str, member: Sender) -> None:
        if room.presence.change(event, member):  # only news goes on
            self._emit(Presence(item_id, event, member))

    def _emit(self, event: Event) -> None:
        if self._sink is not None:
            self._sink(event)

    # --- heartbeats and upkeep ----------------------------------------------

    async def _heartbeats(self) -> None:
        interval = self._ttl_ms / 3000
        while not self._stopping:
            await asyncio.sleep(interval)
            try:
                await self.presence.heartbeat()
                if self.presence.dirty:
                    await self.presence.reconcile()
                await self.presence.reap_dead_nodes()
                await self._keep_rooms_alive()
                await self._settle_suspects()
            except (*REDIS_ERRORS, BackendUnavailable) as exc:
                log.debug("heartbeat failed: %s", exc)

    async def _settle_suspects(self) -> None:
        """Members still missing from Redis a TTL after a reconnect are gone."""
        now = asyncio.get_running_loop().time()
        for item_id, room in list(self._rooms.items()):
            due = room.presence.due(now)
            if not due:
                continue
            present = await self._redis.hmget(self._key("presence", item_id), due)
            for cid, value in zip(due, present, strict=True):
                gone = room.presence.settle(cid, value is not None)
                if gone is not None:
                    self._emit(Presence(item_id, "leave", gone))

    async def _keep_rooms_alive(self) -> None:
        """A room with members here keeps its seq and history however quiet it is:
        were they to expire, its seq would restart under its members' feet."""
        now = asyncio.get_running_loop().time()
        due = [i for i, r in self._rooms.items() if now - r.kept_at > self._history_ttl_ms / 4000]
        if not due:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for item_id in due:
                pipe.pexpire(self._key("meta", item_id), self._history_ttl_ms)
                pipe.pexpire(self._key("history", item_id), self._history_ttl_ms)
            await pipe.execute()
        for item_id in due:
            if item_id in self._rooms:
                self._rooms[item_id].kept_at = now


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _members(flat: list[bytes]) -> list[Sender]:
    """Members from a presence hash read by a script: [client_id, [user, node], ...]."""
    return [Sender(orjson.loads(flat[i + 1])[0], _text(flat[i])) for i in range(0, len(flat), 2)]


def _entry_message(item_id: str, entry: list[Any], with_ref: bool = False) -> Message:
    """A history entry: ``[id, [b"h", head, b"d", data]]`` (as XRANGE gives it to Lua)."""
    fields = entry[1]
    seq, ts, user, cid, ref, id = orjson.loads(fields[1])
    ref = (ref or None) if with_ref else None
    return Message(item_id, seq, ts, Sender(user, cid), fields[3], ref, id or None)
