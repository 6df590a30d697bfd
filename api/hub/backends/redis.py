"""Redis backend: one room across many processes and machines.

Per room: a counter (``seq``), a Stream (history, entry id ``<seq>-0``), a hash
(presence) and a pub/sub channel; the Lua scripts in redis_scripts.py change
them atomically. Per process: ONE pub/sub connection, subscribed to the rooms
that have local members, read by one listener task, plus a small command pool;
never a Redis connection per client.

What keeps members' views whole when the pub/sub connection drops and comes
back (redis-py re-subscribes by itself): every subscribed room remembers the
last seq and the members it delivered; on re-subscription the listener re-seeds
the counter (Redis may have restarted empty), replays missed messages from the
Stream and turns presence changes into join/leave events. Messages arriving
with a gap are filled from the Stream first, and duplicates are dropped, so the
hub always sees each room's seqs in order, once.

Crashed processes: each process refreshes a heartbeat key with a TTL; any
process that finds another's heartbeat gone removes that process's members
(one Lua script, so once) and sends their leave events.
"""

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson

from api.hub.backends import redis_scripts
from api.hub.backends.base import (
    BackendUnavailable,
    Control,
    Event,
    EventSink,
    Message,
    Presence,
    Relay,
    Sender,
    Snapshot,
)

try:
    from redis import asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
except ImportError as exc:  # pragma: no cover - exercised by hand without the extra
    raise ImportError("the Redis backend needs redis-py: pip install 'itemrooms[redis]'") from exc

from api.hub.backends.redis_publish import REDIS_ERRORS, PublishPipeline  # needs redis-py

log = logging.getLogger("itemrooms.redis")

SUBSCRIBE_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 5.0
LISTEN_POLL_S = 1.0
RETRY_CAP_S = 2.0
POOL_SIZE = 32


@dataclass(slots=True)
class _Room:
    """What this process has delivered of a subscribed room."""

    confirmed: asyncio.Future[None]
    last_seq: int = 0
    kept_at: float = 0.0  # when its keys' TTL was last pushed back
    members: dict[str, Sender] = field(default_factory=dict)  # client_id -> member


class RedisBackend:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "itemrooms:",
        history_size: int = 1000,
        history_ttl_s: float = 7 * 86400,
        presence_ttl_s: float = 15.0,
    ) -> None:
        self._prefix = prefix
        self._history_size = history_size
        self._history_ttl_ms = int(history_ttl_s * 1000)
        self._ttl_ms = int(presence_ttl_s * 1000)
        self.node_id = secrets.token_hex(8)
        # A bounded pool that makes callers wait for a free connection, rather than
        # opening one per concurrent caller (or failing with "Too many connections").
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_SIZE,
            timeout=COMMAND_TIMEOUT_S,
            socket_connect_timeout=2,
            socket_timeout=COMMAND_TIMEOUT_S,
            health_check_interval=5,
            client_name=f"itemrooms-{self.node_id}",  # tells operators who is connected
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        self._pubsub = self._redis.pubsub()
        self._scripts = {
            name: self._redis.register_script(getattr(redis_scripts, name))
            for name in ("PUBLISH", "JOIN", "LEAVE", "REAP", "RESEED")
        }
        self._publishes = PublishPipeline(self._redis, self._scripts["PUBLISH"])
        self._rooms: dict[str, _Room] = {}  # subscribed rooms
        self._local: dict[tuple[str, str], Sender] = {}  # (item, client_id) this node joined
        self._pending_leaves: dict[tuple[str, str], Sender] = {}  # left while Redis was away
        self._sink: EventSink | None = None
        self._connected = False
        self._tasks: list[asyncio.Task[None]] = []
        self._control: asyncio.Future[None] | None = None
        # Repairs left to do after a reconnect (retried until they succeed).
        self._reregister = False
        self._resync_rooms: set[str] = set()

    # --- keys ---------------------------------------------------------------

    def _key(self, kind: str, item_id: str) -> str:
        return f"{self._prefix}{kind}:{item_id}"

    def _channel(self, item_id: str) -> str:
        return self._key("room", item_id)

    @property
    def _nodes_key(self) -> str:
        return f"{self._prefix}nodes"

    def _node_key(self, node: str) -> str:
        return f"{self._prefix}node:{node}"

    def _node_members_key(self, node: str) -> str:
        return f"{self._prefix}node-members:{node}"

    # --- lifecycle ----------------------------------------------------------

    async def start(self, sink: EventSink) -> None:
        try:
            await asyncio.wait_for(self._redis.ping(), COMMAND_TIMEOUT_S)
        except REDIS_ERRORS as exc:
            raise BackendUnavailable(f"cannot reach Redis: {exc}") from exc
        self._sink = sink
        await self._heartbeat_once()
        loop = asyncio.get_running_loop()
        self._control = loop.create_future()
        # A control channel keeps the pub/sub connection open while no room is subscribed.
        await self._pubsub.subscribe(f"{self._prefix}control")
        self._tasks = [
            loop.create_task(self._listen(), name="itemrooms redis listener"),
            loop.create_task(self._heartbeats(), name="itemrooms redis heartbeat"),
        ]
        await asyncio.wait_for(self._control, SUBSCRIBE_TIMEOUT_S)
        self._connected = True

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._publishes.stop()
        self._sink = None
        with contextlib.suppress(*REDIS_ERRORS):
            # Leave events for whoever is still connected here, for the other processes.
            await self._redis.delete(self._node_key(self.node_id))
            await self._reap(self.node_id, force=True)
        with contextlib.suppress(*REDIS_ERRORS):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._redis.aclose(close_connection_pool=True)

    async def ready(self) -> bool:
        if not self._connected:
            return False
        try:
            return bool(await asyncio.wait_for(self._redis.ping(), 1.0))
        except REDIS_ERRORS:
            return False

    # --- rooms --------------------------------------------------------------

    async def subscribe(self, item_id: str) -> None:
        room = _Room(confirmed=asyncio.get_running_loop().create_future())
        self._rooms[item_id] = room
        try:
            await self._pubsub.subscribe(self._channel(item_id))
            await asyncio.wait_for(asyncio.shield(room.confirmed), SUBSCRIBE_TIMEOUT_S)
        except REDIS_ERRORS as exc:
            await self.unsubscribe(item_id)
            raise BackendUnavailable(f"cannot subscribe to {item_id}: {exc}") from exc

    async def unsubscribe(self, item_id: str) -> None:
        self._rooms.pop(item_id, None)
        with contextlib.suppress(*REDIS_ERRORS):
            await self._pubsub.unsubscribe(self._channel(item_id))

    async def publish(self, item_id: str, sender: Sender, data: bytes, ref: str | None) -> int:
        keys = [self._key("seq", item_id), self._key("history", item_id), self._channel(item_id)]
        args = [sender.user, sender.client_id, ref or "", data, self._history_size]
        args.append(self._history_ttl_ms)
        return await self._publishes.publish(keys, args)

    async def relay(self, item_id: str, sender: Sender, payload: bytes) -> None:
        head = orjson.dumps([sender.user, sender.client_id])
        try:
            await self._redis.publish(self._channel(item_id), b"b" + head + b"\n" + payload)
        except REDIS_ERRORS as exc:
            raise BackendUnavailable(str(exc)) from exc

    async def control(self, item_id: str, action: str, user: str | None) -> None:
        payload = b"c" + orjson.dumps([action, user])
        try:
            await self._redis.publish(self._channel(item_id), payload)
        except REDIS_ERRORS as exc:
            raise BackendUnavailable(str(exc)) from exc

    async def join(self, item_id: str, member: Sender) -> None:
        self._local[(item_id, member.client_id)] = member
        await self._register(item_id, member)

    async def _register(self, item_id: str, member: Sender) -> None:
        keys = [
            self._key("presence", item_id),
            self._node_members_key(self.node_id),
            self._channel(item_id),
        ]
        await self._run("JOIN", keys, [member.client_id, member.user, self.node_id, item_id])

    async def leave(self, item_id: str, member: Sender) -> None:
        self._local.pop((item_id, member.client_id), None)
        try:
            await self._unregister(item_id, member)
        except BackendUnavailable:
            # Our heartbeat keeps the entry alive, so it must be removed later, not forgotten.
            self._pending_leaves[(item_id, member.client_id)] = member

    async def _unregister(self, item_id: str, member: Sender) -> None:
        keys = [
            self._key("presence", item_id),
            self._node_members_key(self.node_id),
            self._channel(item_id),
        ]
        await self._run("LEAVE", keys, [member.client_id, member.user, item_id])

    async def snapshot(self, item_id: str, since: int | None) -> Snapshot:
        history = self._key("history", item_id)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.get(self._key("seq", item_id))
                pipe.hgetall(self._key("presence", item_id))
                if since is not None:  # history only for a resume
                    pipe.xrange(history, "-", "+", count=1)
                    pipe.xrange(history, f"{since + 1}-0", "+")
                seq_raw, presence, *resume = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise BackendUnavailable(str(exc)) from exc
        seq = int(seq_raw or 0)
        members = tuple(_member(cid, value) for cid, value in presence.items())
        if since is None:
            return Snapshot(seq, members, (), True)
        oldest, entries = resume
        recovered = True
        if since > seq:  # a stream the client never saw: give it all we have
            since, recovered = 0, False
            entries = await self._xrange(history, "-", f"{seq}-0")
        messages = tuple(m for m in (_entry_message(item_id, e) for e in entries) if m.seq <= seq)
        if recovered and since < seq:
            oldest_seq = _entry_seq(oldest[0]) if oldest else seq + 1
            recovered = since + 1 >= oldest_seq
        return Snapshot(seq, members, messages, recovered)

    # --- plumbing -----------------------------------------------------------

    async def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._scripts[script](keys=keys, args=args)
        except REDIS_ERRORS as exc:
            raise BackendUnavailable(f"Redis: {exc}") from exc

    async def _xrange(self, key: str, start: str, end: str) -> list[Any]:
        try:
            entries: Any = await self._redis.xrange(key, start, end)
        except REDIS_ERRORS as exc:
            raise BackendUnavailable(str(exc)) from exc
        return list(entries or ())

    async def _listen(self) -> None:
        """Read the pub/sub connection; on failure, retry until Redis is back.

        Everything that emits events runs in this one task, so each room's events
        keep their order, repairs after a reconnect included.
        """
        delay = 0.05
        while True:
            try:
                message = await self._pubsub.get_message(timeout=LISTEN_POLL_S)
                if message is not None:
                    await self._handle(message)
                if self._reregister or self._resync_rooms:
                    await self._repair()
                delay = 0.05
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as exc:
                if self._connected:
                    log.warning("Redis connection lost (%s); retrying", exc)
                self._connected = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_CAP_S)
            except Exception:  # a bug must not stop delivery for every room
                log.exception("Redis listener: failed to handle a message")

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
                self._reregister = True
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
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self._key("seq", item_id))
            pipe.hgetall(self._key("presence", item_id))
            seq, presence = await pipe.execute()
        room.last_seq = int(seq or 0)
        room.members = {_text(cid): _member(cid, v) for cid, v in presence.items()}
        room.confirmed.set_result(None)

    async def _repair(self) -> None:
        """After a reconnect (Redis may have restarted empty): heartbeat, presence of
        our members, leaves that could not be sent, then each room's missed events."""
        if self._reregister:
            await self._heartbeat_once()
            for (item_id, _), member in list(self._local.items()):
                await self._register(item_id, member)
            for key, member in list(self._pending_leaves.items()):
                await self._unregister(key[0], member)
                del self._pending_leaves[key]
            self._reregister = False
            self._connected = True
            log.info("Redis connection restored")
        for item_id in list(self._resync_rooms):
            room = self._rooms.get(item_id)
            if room is not None:
                await self._resync(item_id, room)
            self._resync_rooms.discard(item_id)

    async def _resync(self, item_id: str, room: _Room) -> None:
        """After a reconnect: re-seed the counter, replay missed messages, fix presence."""
        seq_key = self._key("seq", item_id)
        await self._run("RESEED", [seq_key], [room.last_seq])
        seq = int(await self._redis.get(seq_key) or 0)
        if seq > room.last_seq:
            await self._fill_gap(item_id, room, seq + 1)
        presence = await self._redis.hgetall(self._key("presence", item_id))
        current = {_text(cid): _member(cid, v) for cid, v in presence.items()}
        for cid, member in list(room.members.items()):
            if cid not in current:
                self._presence(item_id, room, "leave", member)
        for cid, member in current.items():
            if cid not in room.members:
                self._presence(item_id, room, "join", member)

    async def _on_payload(self, item_id: str, room: _Room, payload: bytes) -> None:
        kind, body = payload[:1], payload[1:]
        if kind == b"m":
            head_raw, _, data = body.partition(b"\n")
            seq, ts, user, cid, ref = orjson.loads(head_raw)
            if seq <= room.last_seq:
                return  # already delivered (replayed after a reconnect)
            if seq > room.last_seq + 1:
                await self._fill_gap(item_id, room, seq)
            room.last_seq = seq
            self._emit(Message(item_id, seq, ts, Sender(user, cid), data, ref or None))
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
        """Deliver from history the messages between the last delivered and ``before``."""
        history = self._key("history", item_id)
        entries = await self._xrange(history, f"{room.last_seq + 1}-0", f"{before - 1}-0")
        for entry in entries:
            message = _entry_message(item_id, entry)
            if message.seq > room.last_seq:
                room.last_seq = message.seq
                self._emit(message)
        if room.last_seq < before - 1:
            log.warning("room %s: seqs up to %d were no longer in history", item_id, before - 1)

    def _presence(self, item_id: str, room: _Room, event: str, member: Sender) -> None:
        # Only changes go on: a join for a known member (re-registered after a Redis
        # restart) or a leave for an unknown one says nothing new.
        if event == "join":
            if member.client_id in room.members:
                return
            room.members[member.client_id] = member
        elif room.members.pop(member.client_id, None) is None:
            return
        self._emit(Presence(item_id, event, member))

    def _emit(self, event: Event) -> None:
        if self._sink is not None:
            self._sink(event)

    # --- heartbeats and crashed processes -----------------------------------

    async def _heartbeats(self) -> None:
        interval = self._ttl_ms / 3000
        while True:
            await asyncio.sleep(interval)
            try:
                await self._heartbeat_once()
                await self._reap_dead_nodes()
                await self._keep_rooms_alive()
            except REDIS_ERRORS as exc:
                log.debug("heartbeat failed: %s", exc)

    async def _heartbeat_once(self) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._node_key(self.node_id), b"1", px=self._ttl_ms)
            pipe.sadd(self._nodes_key, self.node_id)
            await pipe.execute()

    async def _keep_rooms_alive(self) -> None:
        """A room with members here keeps its seq and history however quiet it is:
        were they to expire, its seq would restart under its members' feet."""
        now = asyncio.get_running_loop().time()
        due = [i for i, r in self._rooms.items() if now - r.kept_at > self._history_ttl_ms / 4000]
        if not due:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for item_id in due:
                pipe.pexpire(self._key("seq", item_id), self._history_ttl_ms)
                pipe.pexpire(self._key("history", item_id), self._history_ttl_ms)
            await pipe.execute()
        for item_id in due:
            if item_id in self._rooms:
                self._rooms[item_id].kept_at = now

    async def _reap_dead_nodes(self) -> None:
        nodes = [_text(n) for n in await self._redis.smembers(self._nodes_key)]
        for node in nodes:
            if node != self.node_id and not await self._redis.exists(self._node_key(node)):
                removed = await self._reap(node, force=False)
                if removed > 0:
                    log.info("removed %d members of stopped process %s", removed, node)

    async def _reap(self, node: str, force: bool) -> int:
        keys = [self._nodes_key, self._node_key(node), self._node_members_key(node)]
        result: int = await self._scripts["REAP"](
            keys=keys, args=[node, self._prefix, "1" if force else "0"]
        )
        return result


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _member(client_id: bytes | str, value: bytes | str) -> Sender:
    user, _node = orjson.loads(value)
    return Sender(user, _text(client_id))


def _entry_seq(entry: tuple[bytes, dict[bytes, bytes]]) -> int:
    return int(entry[0].split(b"-", 1)[0])


def _entry_message(item_id: str, entry: tuple[bytes, dict[bytes, bytes]]) -> Message:
    _, fields = entry
    seq, ts, user, cid = orjson.loads(fields[b"h"])
    return Message(item_id, seq, ts, Sender(user, cid), fields[b"d"], None)
