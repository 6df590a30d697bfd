"""This process's members in a shared backend's presence, kept true by the process itself:
what the Redis and PostgreSQL backends share (redis_presence.py, postgres_presence.py
supply the five calls to their database).

``local`` (the members this process has, by room) is the truth; the database holds a
copy, each entry naming this process's node, kept alive by the node's heartbeat. The
copy can go wrong in three ways, each healed here rather than waited out:

- a join or leave that failed or timed out may or may not have been applied;
- the other processes reaped this one (its heartbeat lapsed past the TTL during a
  stall: a VM pause, a long GC, a partition) and announced its members' leaves;
- the database lost its data (Redis restarted without persistence, PostgreSQL's
  unlogged tables after a crash).

The heartbeat notices the last two (the node was no longer registered); every failure
marks the copy dirty; a dirty copy is reconciled against ``local`` on the next
heartbeat, and again until that succeeds.
"""

import asyncio
import logging

from itemrooms.api.hub.backends.base import BackendUnavailable, Sender

# (item, client_id) -> the member
Entries = list[tuple[tuple[str, str], Sender]]


class NodePresence:
    """Each of the five database calls raises BackendUnavailable when it failed."""

    def __init__(self, node_id: str, ttl_ms: int, log: logging.Logger) -> None:
        self.node_id = node_id
        self._ttl_ms = ttl_ms
        self._log = log
        self.local: dict[tuple[str, str], Sender] = {}  # (item, client_id) -> member
        self.dirty = False  # the database's copy may differ from ``local``
        self._reconciling = asyncio.Lock()
        self._reap_after = 0.0  # loop time before which no other node is reaped
        self._beat_at = 0.0  # loop time of the last heartbeat the database answered

    # --- the database's side ------------------------------------------------

    async def _beat(self) -> bool:
        """Refresh this node's heartbeat; True when the node was not registered."""
        raise NotImplementedError

    async def _register(self, entries: Entries) -> bool:
        """Register members (announcing those that were missing); False, with nothing
        written, when the node itself is not registered (its heartbeat does that)."""
        raise NotImplementedError

    async def _unregister(self, entries: Entries) -> None:
        """Remove members, announcing those that were registered."""
        raise NotImplementedError

    async def _registered(self) -> Entries:
        """What the database holds of this node's members."""
        raise NotImplementedError

    async def _reap(self) -> int:
        """Remove the members of every other node whose heartbeat lapsed; how many."""
        raise NotImplementedError

    # --- members ------------------------------------------------------------

    async def join(self, item_id: str, member: Sender) -> None:
        key = (item_id, member.client_id)
        self.local[key] = member
        try:
            registered = await self._register([(key, member)])
        except BackendUnavailable:
            self.dirty = True  # it may have been applied: the caller's leave settles it
            raise
        if not registered:
            # Reaped while this process stalled: the next heartbeat registers the node
            # again, then every member (this one included).
            self.dirty = True

    async def leave(self, item_id: str, member: Sender) -> None:
        key = (item_id, member.client_id)
        self.local.pop(key, None)
        try:
            await self._unregister([(key, member)])
        except BackendUnavailable as exc:
            # Our heartbeat keeps the entry alive, so it must be removed later.
            self._log.debug("leave of %s deferred: %s", member.client_id, exc)
            self.dirty = True

    # --- heartbeat and repair -----------------------------------------------

    async def heartbeat(self) -> None:
        """Refresh this node's heartbeat; notice when it may have lapsed.

        A lapse shows three ways: the node was not registered (reaped, or the database
        lost its data); the heartbeat failed (a partition, a stall: and a late copy of
        it may yet register the node again once its members are gone, so its answer
        cannot be trusted); or it came late (this process or the database stalled).
        In the last two cases the other nodes' heartbeats may have lapsed just the
        same, so none is reaped for a TTL: they get the time to beat again."""
        loop = asyncio.get_running_loop()
        try:
            missing = await self._beat()
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
                self._log.warning(
                    "this process's presence had lapsed (a stall past the presence TTL, "
                    "or the backend lost its data); registering its %d members again",
                    len(self.local),
                )
            self.dirty = True

    async def reconcile(self) -> None:
        """Make the database's copy of this node's members equal ``local``: register
        what is missing (its room hears ``join`` again), remove what has left."""
        async with self._reconciling:
            self.dirty = False  # failures from here on mark it again
            try:
                await self._reconcile()
            except BaseException:
                self.dirty = True
                raise

    async def _reconcile(self) -> None:
        registered = dict(await self._registered())
        missing = [(k, m) for k, m in list(self.local.items()) if k not in registered]
        gone = [(k, m) for k, m in registered.items() if k not in self.local]
        if missing and not await self._register(missing):
            raise BackendUnavailable("this node is not registered yet")
        # A member that left while it was registered again: its leave may have run first.
        gone += [(k, m) for k, m in missing if k not in self.local]
        if gone:
            await self._unregister(gone)
        if missing or gone:
            self._log.info(
                "presence repaired: %d registered again, %d removed", len(missing), len(gone)
            )

    # --- crashed processes --------------------------------------------------

    def hold_reaping(self) -> None:
        """After the database comes back, every node's heartbeat may look lapsed (an
        outage longer than the TTL): give them a TTL to beat again before taking them
        for dead, or every member would leave and join again."""
        self._reap_after = asyncio.get_running_loop().time() + self._ttl_ms / 1000

    async def reap_dead_nodes(self) -> None:
        if asyncio.get_running_loop().time() < self._reap_after:
            return
        removed = await self._reap()
        if removed > 0:
            self._log.info("removed %d members of stopped processes", removed)
