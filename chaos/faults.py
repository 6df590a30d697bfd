"""The faults: each injects one failure, lifts it, and says when it was lifted.

Every fault runs while publishers and readers are busy; the checks that follow
(chaos/checks.py) are the same for all, except that only a fault which loses the
backend's data may change a room's epoch. Some faults are the backend's own (Redis
restarted or stalled; PostgreSQL restarted, emptied, stalled, or a process's
connections terminated); the others act on the itemrooms processes. A few faults
check something of their own while they run (a drained process closes its clients
with 1001; a paused process's members are reaped by the others), as the documented
behaviour of that fault.
"""

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from chaos.context import PhaseContext
from chaos.netns import Namespaces
from chaos.polling import holds, wait_until

Inject = Callable[[PhaseContext], Awaitable[None]]


@dataclass(frozen=True)
class Fault:
    name: str
    summary: str
    inject: Inject
    backends: tuple[str, ...] = ("redis", "postgres")  # the backends it applies to
    loses_data: bool = False  # only then may a room's epoch change
    aof: bool = False  # Redis runs with AOF (appendfsync always) during this fault
    needs_netns: bool = False
    stalls_victim: bool = False  # its victim's members are rightly reaped meanwhile


async def kill9(ctx: PhaseContext) -> None:
    ctx.victim.kill()
    await asyncio.sleep(ctx.options.down_s)  # the process stays dead this long
    await ctx.victim.start()
    ctx.heal()


async def sigterm(ctx: PhaseContext) -> None:
    """Drain: every member of the process must be closed with 1001 going_away."""
    members = ctx.clients_on(ctx.victim)
    connections = {c.name: c.connection for c in members}
    timeout = float(ctx.options.env.get("ITEMROOMS_SHUTDOWN_TIMEOUT_S", 5)) + 10
    code = await ctx.victim.drain(timeout)
    if code is None:
        ctx.violation(f"sigterm: {ctx.victim.name} did not exit within {timeout:.0f} s")
    elif code not in (0, -signal.SIGTERM):  # uvicorn re-raises SIGTERM once it is done
        ctx.violation(f"sigterm: {ctx.victim.name} exited with {code}; see {ctx.victim.log}")

    def all_closed() -> bool:
        return all(
            any(c.connection == connections[client.name] for c in client.closes)
            for client in members
        )

    await wait_until(holds(all_closed), 10)
    for client in members:
        closes = [c for c in client.closes if c.connection == connections[client.name]]
        if not closes or (closes[0].code, closes[0].reason) != (1001, "going_away"):
            got = f"{closes[0].code} {closes[0].reason!r}" if closes else "no close yet"
            ctx.violation(f"sigterm: {client.name} on {ctx.victim.name} got {got}, not 1001")
    ctx.notes.append(f"drained {len(members)} members")
    await ctx.victim.start()
    ctx.heal()


async def redis_restart(ctx: PhaseContext) -> None:
    assert ctx.cluster.redis is not None
    await ctx.cluster.redis.restart(ctx.options.down_s)
    ctx.heal()


async def redis_sigstop(ctx: PhaseContext) -> None:
    redis = ctx.cluster.redis
    assert redis is not None
    redis.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(ctx.options.backend_pause_s)  # the pause itself
    finally:
        redis.signal(signal.SIGCONT)
    ctx.heal()


async def redis_client_pause(ctx: PhaseContext) -> None:
    assert ctx.cluster.redis is not None
    pause = ctx.options.backend_pause_s
    await ctx.cluster.redis.command("CLIENT", "PAUSE", int(pause * 1000), "ALL")
    await asyncio.sleep(pause)  # Redis lifts the pause by itself
    ctx.heal()


async def redis_debug_sleep(ctx: PhaseContext) -> None:
    assert ctx.cluster.redis is not None
    pause = ctx.options.backend_pause_s
    await ctx.cluster.redis.command("DEBUG", "SLEEP", str(pause), timeout=pause + 10)
    ctx.heal()


async def process_pause(ctx: PhaseContext) -> None:
    """SIGSTOP past the presence TTL: the others must reap its members meanwhile."""
    ttl = ctx.options.ttl_s
    pause = max(ctx.options.pause_s, 2 * ttl + 2)
    paused = {c.user for c in ctx.clients_on(ctx.victim) if c.user is not None}
    others = [p for p in ctx.cluster.processes if p is not ctx.victim]
    ctx.victim.signal(signal.SIGSTOP)
    started = time.monotonic()
    try:

        async def reaped() -> bool:
            for process in others:
                present = await ctx.api.presence(process.http_url, ctx.room.item_id)
                if present is not None:
                    return not (paused & present)
            return False

        took = await wait_until(reaped, pause, poll=0.2) if paused and others else None
        if paused and others:
            if took is None:
                ctx.violation(
                    f"process-pause: members of {ctx.victim.name}, paused {pause:.0f} s "
                    f"(TTL {ttl:g} s), were never removed from presence: {sorted(paused)}"
                )
            else:
                ctx.notes.append(f"reaped after {took:.1f} s")
        await asyncio.sleep(max(0.0, pause - (time.monotonic() - started)))  # the pause
    finally:
        ctx.victim.signal(signal.SIGCONT)
    ctx.heal()


async def postgres_restart(ctx: PhaseContext, empty: bool = False) -> None:
    assert ctx.cluster.postgres is not None
    await ctx.cluster.postgres.restart(ctx.options.down_s, empty=empty)
    ctx.heal()


async def postgres_restart_empty(ctx: PhaseContext) -> None:
    await postgres_restart(ctx, empty=True)


async def postgres_terminate(ctx: PhaseContext) -> None:
    """pg_terminate_backend of every connection of the victim (an operator, a pooler's
    recycling, a failover): it must find new ones and miss nothing."""
    assert ctx.cluster.postgres is not None and ctx.victim.process is not None
    terminated = await ctx.cluster.postgres.terminate(f"itemrooms-{ctx.victim.process.pid}-%")
    if not terminated:
        ctx.violation(f"postgres-terminate: no connection of {ctx.victim.name} was found")
    ctx.notes.append(f"terminated {terminated} connections")
    ctx.heal()


async def postgres_sigstop(ctx: PhaseContext) -> None:
    postgres = ctx.cluster.postgres
    assert postgres is not None
    postgres.pause()
    try:
        await asyncio.sleep(ctx.options.backend_pause_s)  # the pause itself
    finally:
        postgres.resume()
    ctx.heal()


async def partition(ctx: PhaseContext) -> None:
    """Cut the victim's link to the backend (its clients still reach it), then mend it."""
    space = ctx.cluster.space_of(ctx.victim)
    Namespaces.cut(space)
    try:
        await asyncio.sleep(ctx.options.backend_pause_s + 2)  # the partition itself
    finally:
        Namespaces.heal(space)
    ctx.heal()


REDIS, POSTGRES = ("redis",), ("postgres",)

FAULTS = {
    fault.name: fault
    for fault in (
        Fault("kill9", "kill -9 of a process, restarted after a second", kill9),
        Fault("sigterm", "SIGTERM drain of a process, then its restart", sigterm),
        Fault(
            "redis-restart-aof",
            "kill -9 of Redis with AOF (fsync always), restarted",
            redis_restart,
            backends=REDIS,
            aof=True,
        ),
        Fault(
            "redis-restart",
            "kill -9 of Redis without persistence: it comes back empty",
            redis_restart,
            backends=REDIS,
            loses_data=True,
        ),
        Fault(
            "redis-sigstop",
            "Redis SIGSTOPped past the command timeout",
            redis_sigstop,
            backends=REDIS,
        ),
        Fault(
            "redis-client-pause",
            "CLIENT PAUSE ALL past the command timeout",
            redis_client_pause,
            backends=REDIS,
        ),
        Fault(
            "redis-debug-sleep",
            "DEBUG SLEEP past the command timeout",
            redis_debug_sleep,
            backends=REDIS,
        ),
        Fault(
            "postgres-restart",
            "PostgreSQL crashed (immediate shutdown) and restarted: it keeps its data",
            postgres_restart,
            backends=POSTGRES,
        ),
        Fault(
            "postgres-restart-empty",
            "PostgreSQL crashed and replaced by an empty cluster",
            postgres_restart_empty,
            backends=POSTGRES,
            loses_data=True,
        ),
        Fault(
            "postgres-terminate",
            "pg_terminate_backend of every connection of a process",
            postgres_terminate,
            backends=POSTGRES,
        ),
        Fault(
            "postgres-sigstop",
            "PostgreSQL (every backend) SIGSTOPped past the command timeout",
            postgres_sigstop,
            backends=POSTGRES,
        ),
        Fault(
            "process-pause",
            "a process SIGSTOPped past the presence TTL",
            process_pause,
            stalls_victim=True,
        ),
        Fault(
            "partition",
            "a process cut off from the backend (veth down), its clients still on it",
            partition,
            needs_netns=True,
            stalls_victim=True,
        ),
    )
}
