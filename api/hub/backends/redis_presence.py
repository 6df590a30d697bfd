"""This process's entries in Redis presence, kept true by the process itself.

``local`` (the members this process has, by room) is the truth; Redis holds a copy:
each room's presence hash, and this node's own list of what it registered
(``node-members:<node>``). The copy can go wrong in three ways, each healed here
rather than waited out:

- a join or leave that failed or timed out (Redis paused, say) may or may not have
  been applied;
- the other processes reaped this one (its heartbeat lapsed past the TTL during a
  stall: a VM pause, a long GC) and announced its members' leaves;
- Redis lost everything (restarted without persistence).

The heartbeat notices the last two (the node was no longer registered) and every
failure marks the copy dirty; a dirty copy is reconciled against ``local`` on the
next heartbeat, and again until that succeeds.
"""

import asyncio
import logging
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from itemrooms.api.hub.backends import redis_scripts
from itemrooms.api.hub.backends.base import BackendUnavailable, Sender
from itemrooms.api.hub.backends.redis_publish import REDIS_ERRORS

log = logging.getLogger("itemrooms.redis")

RECONCILE_CHUNK = 500  # presence scripts per pipeline while reconciling


class NodePresence:
    def __init__(self, redis: Redis, prefix: str, node_id: str, ttl_ms: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self.node_id = node_id
        self._ttl_ms = ttl_ms
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(getattr(redis_scripts, name))
            for name in ("JOIN", "LEAVE", "REAP", "HEARTBEAT")
        }
        self.local: dict[tuple[str, str], Sender] = {}  # (item, client_id) -> member
        self.dirty = False  # Redis' copy may differ from ``local``
        self._reconciling = asyncio.Lock()
        self._reap_after = 0.0  # loop time before which no other node is reaped
        self._beat_at = 0.0  # loop time of the last heartbeat Redis answered

    # --- keys ---------------------------------------------------------------

    def _room_keys(self, item_id: str) -> list[str]:
        return [
            f"{self._prefix}presence:{item_id}",
            self._members_key(self.node_id),
            f"{self._prefix}room:{item_id}",
        ]

    @property
    def _nodes_key(self) -> str:
        return f"{self._prefix}nodes"

    def _node_key(self, node: str) -> str:
        return f"{self._prefix}node:{node}"

    def _members_key(self, node: str) -> str:
        return f"{self._prefix}node-members:{node}"

    # --- members ------------------------------------------------------------

    async def join(self, item_id: str, member: Sender) -> None:
        self.local[(item_id, member.client_id)] = member
        try:
            await self._scripts["JOIN"](
                keys=self._room_keys(item_id),
                args=[member.client_id, member.user, self.node_id, item_id],
            )
        except REDIS_ERRORS as exc:
            self.dirty = True  # it may have been applied: the caller's leave settles it
            raise BackendUnavailable(f"Redis: {exc}") from exc

    async def leave(self, item_id: str, member: Sender) -> None:
        self.local.pop((item_id, member.client_id), None)
        try:
            await self._scripts["LEAVE"](
                keys=self._room_keys(item_id), args=[member.client_id, member.user, item_id]
            )
        except REDIS_ERRORS as exc:
            # Our heartbeat keeps the entry alive, so it must be removed later, not forgotten.
            log.debug("leave of %s deferred: %s", member.client_id, exc)
            self.dirty = True

    # --- heartbeat and repair -----------------------------------------------

    async def heartbeat(self) -> None:
        """Refresh this node's heartbeat; notice when it may have lapsed.

        A lapse shows three ways: Redis says the node was not registered (reaped, or
        Redis lost its data); the heartbeat failed (a partition, a stall: and a late
        copy of it may yet re-register the node once its members are gone, so its
        answer cannot be trusted); or it came late (this process or Redis stalled). In
        the last two cases the other nodes' heartbeats may have lapsed just the same,
        so none is reaped for a TTL: they get the time to beat again."""
        loop = asyncio.get_running_loop()
        try:
            missing = await self._scripts["HEARTBEAT"](
                keys=[self._node_key(self.node_id), self._nodes_key],
                args=[self._ttl_ms, self.node_id],
            )
        except REDIS_ERRORS:
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
                    "or Redis lost its data); registering its %d members again",
                    len(self.local),
                )
            self.dirty = True

    async def reconcile(self) -> None:
        """Make Redis' copy of this node's members equal ``local``: register what is
        missing (its room hears ``join`` again), remove what has left."""
        async with self._reconciling:
            self.dirty = False  # failures from here on mark it again
            try:
                await self._reconcile()
            except BaseException:
                self.dirty = True
                raise

    async def _reconcile(self) -> None:
        raw = await self._redis.hgetall(self._members_key(self.node_id))
        registered: dict[tuple[str, str], Sender] = {}
        for key, user in raw.items():
            item_id, _, client_id = _text(key).partition("\n")
            registered[(item_id, client_id)] = Sender(_text(user), client_id)
        missing = [(k, m) for k, m in list(self.local.items()) if k not in registered]
        gone = [(k, m) for k, m in registered.items() if k not in self.local]
        await self._run("JOIN", missing)
        # A member that left while it was registered again: its leave may have run first.
        await self._run("LEAVE", gone + [(k, m) for k, m in missing if k not in self.local])
        if missing or gone:
            log.info("presence repaired: %d registered again, %d removed", len(missing), len(gone))

    async def _run(self, script: str, members: list[tuple[tuple[str, str], Sender]]) -> None:
        """Run JOIN or LEAVE for ``members``, pipelined. Both are idempotent, so a chunk
        Redis refused (NOSCRIPT after a restart, say) is simply run again once."""
        for start in range(0, len(members), RECONCILE_CHUNK):
            chunk = members[start : start + RECONCILE_CHUNK]
            if not await self._pipelined(script, chunk):
                await self._redis.script_load(self._scripts[script].script)
                if not await self._pipelined(script, chunk):
                    raise BackendUnavailable(f"presence {script} failed; retried next heartbeat")

    async def _pipelined(self, script: str, chunk: list[tuple[tuple[str, str], Sender]]) -> bool:
        sha = self._scripts[script].sha
        async with self._redis.pipeline(transaction=False) as pipe:
            for (item_id, client_id), member in chunk:
                args: list[Any] = [client_id, member.user]
                args += [self.node_id, item_id] if script == "JOIN" else [item_id]
                keys = self._room_keys(item_id)
                pipe.evalsha(sha, len(keys), *keys, *args)
            results = await pipe.execute(raise_on_error=False)
        return not any(isinstance(r, Exception) for r in results)

    # --- crashed processes --------------------------------------------------

    def hold_reaping(self) -> None:
        """After Redis comes back, every node's heartbeat may have expired meanwhile
        (an outage longer than the TTL, with persistence): give them a TTL to beat
        again before taking them for dead, or every member would leave and rejoin."""
        self._reap_after = asyncio.get_running_loop().time() + self._ttl_ms / 1000

    async def reap_dead_nodes(self) -> None:
        if asyncio.get_running_loop().time() < self._reap_after:
            return
        nodes = [_text(n) for n in await self._redis.smembers(self._nodes_key)]
        for node in nodes:
            if node != self.node_id and not await self._redis.exists(self._node_key(node)):
                removed = await self.reap(node, force=False)
                if removed > 0:
                    log.info("removed %d members of stopped process %s", removed, node)

    async def reap(self, node: str, force: bool) -> int:
        keys = [self._nodes_key, self._node_key(node), self._members_key(node)]
        result: int = await self._scripts["REAP"](
            keys=keys, args=[node, self._prefix, "1" if force else "0"]
        )
        return result

    async def stop(self) -> None:
        """Leave events for whoever is still connected here, for the other processes."""
        await self._redis.delete(self._node_key(self.node_id))
        await self.reap(self.node_id, force=True)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
