"""This process's entries in Redis presence (node_presence.py keeps them true).

Each room's presence hash holds its members as ``client_id -> [user, node]``, with
per-user counts beside it (redis_scripts.py); this
node also keeps its own list of what it registered (``node-members:<node>``), which
the reaper of a node that stopped beating walks, and a heartbeat key with the
presence TTL. The Lua scripts in redis_scripts.py change them atomically.
"""

import logging
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from itemrooms.api.hub.backends import redis_scripts
from itemrooms.api.hub.backends.base import BackendUnavailable, Sender
from itemrooms.api.hub.backends.node_presence import Entries, NodePresence
from itemrooms.api.hub.backends.redis_publish import REDIS_ERRORS

log = logging.getLogger("itemrooms.redis")

RECONCILE_CHUNK = 500  # presence scripts per pipeline while reconciling


class RedisPresence(NodePresence):
    def __init__(self, redis: Redis, prefix: str, node_id: str, ttl_ms: int) -> None:
        super().__init__(node_id, ttl_ms, log)
        self._redis = redis
        self._prefix = prefix
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(getattr(redis_scripts, name))
            for name in ("JOIN", "LEAVE", "REAP", "HEARTBEAT")
        }

    # --- keys ---------------------------------------------------------------

    def _room_keys(self, item_id: str) -> list[str]:
        return [
            f"{self._prefix}presence:{item_id}",
            self._members_key(self.node_id),
            f"{self._prefix}room:{item_id}",
            f"{self._prefix}ucount:{item_id}",
            f"{self._prefix}users:{item_id}",
        ]

    @property
    def _nodes_key(self) -> str:
        return f"{self._prefix}nodes"

    def _node_key(self, node: str) -> str:
        return f"{self._prefix}node:{node}"

    def _members_key(self, node: str) -> str:
        return f"{self._prefix}node-members:{node}"

    # --- the database's side ------------------------------------------------

    async def _beat(self) -> bool:
        try:
            missing = await self._scripts["HEARTBEAT"](
                keys=[self._node_key(self.node_id), self._nodes_key],
                args=[self._ttl_ms, self.node_id],
            )
        except REDIS_ERRORS as exc:
            raise BackendUnavailable(f"Redis: {exc}") from exc
        return bool(missing)

    async def _register(self, entries: Entries) -> bool:
        await self._run("JOIN", entries)
        return True  # a Redis node registers itself with its first member

    async def _unregister(self, entries: Entries) -> None:
        await self._run("LEAVE", entries)

    async def _registered(self) -> Entries:
        try:
            raw = await self._redis.hgetall(self._members_key(self.node_id))
        except REDIS_ERRORS as exc:
            raise BackendUnavailable(f"Redis: {exc}") from exc
        entries: Entries = []
        for key, user in raw.items():
            item_id, _, client_id = _text(key).partition("\n")
            entries.append(((item_id, client_id), Sender(_text(user), client_id)))
        return entries

    async def _reap(self) -> int:
        removed = 0
        try:
            nodes = [_text(n) for n in await self._redis.smembers(self._nodes_key)]
            for node in nodes:
                if node != self.node_id and not await self._redis.exists(self._node_key(node)):
                    removed += max(await self.reap(node, force=False), 0)
        except REDIS_ERRORS as exc:
            raise BackendUnavailable(f"Redis: {exc}") from exc
        return removed

    async def _run(self, script: str, entries: Entries) -> None:
        """Run JOIN or LEAVE for ``entries``: one call, or pipelined. Both are idempotent,
        so a chunk Redis refused (NOSCRIPT after a restart, say) is run again once."""
        try:
            if len(entries) == 1:
                (item_id, client_id), member = entries[0]
                args = self._args(script, client_id, member, item_id)
                await self._scripts[script](keys=self._room_keys(item_id), args=args)
                return
            for start in range(0, len(entries), RECONCILE_CHUNK):
                chunk = entries[start : start + RECONCILE_CHUNK]
                if not await self._pipelined(script, chunk):
                    await self._redis.script_load(self._scripts[script].script)
                    if not await self._pipelined(script, chunk):
                        raise BackendUnavailable(f"presence {script} failed; retried later")
        except REDIS_ERRORS as exc:
            raise BackendUnavailable(f"Redis: {exc}") from exc

    def _args(self, script: str, client_id: str, member: Sender, item_id: str) -> list[Any]:
        args: list[Any] = [client_id, member.user]
        return args + ([self.node_id, item_id] if script == "JOIN" else [item_id])

    async def _pipelined(self, script: str, chunk: Entries) -> bool:
        sha = self._scripts[script].sha
        async with self._redis.pipeline(transaction=False) as pipe:
            for (item_id, client_id), member in chunk:
                keys = self._room_keys(item_id)
                pipe.evalsha(sha, len(keys), *keys, *self._args(script, client_id, member, item_id))
            results = await pipe.execute(raise_on_error=False)
        return not any(isinstance(r, Exception) for r in results)

    # --- crashed processes --------------------------------------------------

    async def reap(self, node: str, force: bool) -> int:
        """Remove ``node``'s members with a leave each (once, whoever runs it); -1 when
        it is not to be reaped (its heartbeat is back, or another reaper took it)."""
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
