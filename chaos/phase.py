"""One fault's run: a fresh room, busy clients, the fault, recovery, then the checks.

Each fault gets a room of its own, so its counts and evidence are its own, and
what one fault broke cannot hide or fake a finding in the next one.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from chaos.checks import Counts, check_history
from chaos.client import Client
from chaos.cluster import Cluster
from chaos.context import PhaseContext
from chaos.faults import Fault
from chaos.http_api import History, HttpApi
from chaos.http_publisher import HttpPublisher
from chaos.ledger import Ledger
from chaos.options import Options
from chaos.polling import holds, wait_until
from chaos.presence_rules import check_leaves
from chaos.publisher import Publisher
from chaos.reader import Reader, Seen
from chaos.reader_rules import check_reader
from chaos.recovery import Recovery
from chaos.room import Room
from chaos.tokens import mint

CONNECT_TIMEOUT_S = 15.0
CATCH_UP_TIMEOUT_S = 15.0


@dataclass
class PhaseResult:
    fault: str
    counts: Counts
    ready_s: float | None = None
    presence_s: float | None = None
    reconnects: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return self.counts.problems


async def run_phase(cluster: Cluster, options: Options, fault: Fault, number: int) -> PhaseResult:
    started = time.monotonic()
    item_id = f"chaos-{cluster.tag}-{number}-{fault.name}"
    ledger = Ledger()
    room = Room(item_id, cluster.processes, ledger, options.answer_timeout_s)
    claims = options.token_claims()

    def token(sub: str) -> str:
        return mint(options.secret, sub, claims=claims)

    if cluster.redis is not None:
        await cluster.redis.set_aof(fault.aof)
    api = HttpApi(token("chaos-checker"))
    if await wait_until(_all_ready(api, cluster), options.ready_timeout_s) is None:
        raise RuntimeError("not every process was ready before the fault")
    readers = [Reader(f"r{i}", token(f"reader-{i}"), room, home=i) for i in range(options.readers)]
    publishers = [
        Publisher(f"w{i}", token(f"writer-{i}"), room, home=i + 1, tag=item_id, rate=options.rate)
        for i in range(options.publishers)
    ]
    clients: list[Client] = [*readers, *publishers]
    http = HttpPublisher(
        token("backend"), item_id, cluster.processes, ledger, item_id, options.http_rate
    )
    victim = cluster.processes[number % len(cluster.processes)]
    ctx = PhaseContext(cluster, options, room, clients, api, victim)
    recovery = Recovery(api, cluster.processes, clients, item_id)
    try:
        for reader in readers:  # readers first: they see the room from its first message
            reader.start()
        await _welcomed(readers)
        for publisher in publishers:
            publisher.start()
        await _welcomed(publishers)
        http.start()
        await asyncio.sleep(options.before_s)  # traffic before the fault
        await fault.inject(ctx)
        recovery.start()
        await asyncio.sleep(options.after_s)  # traffic after it
        history = await _settle(ctx, publishers, http, readers, recovery)
        counts = _check(ctx, fault, history, readers)
        stalled = victim.index if fault.stalls_victim else None
        counts.problems.extend(check_leaves(clients, started, stalled))
        result = PhaseResult(fault.name, counts, notes=ctx.notes)
        result.ready_s = recovery.ready_after(ctx.healed_at)
        result.presence_s = recovery.presence_after(ctx.healed_at)
        _bounds(ctx, recovery, result)
    finally:
        await recovery.stop()
        await http.stop()
        await asyncio.gather(*(c.stop() for c in clients))
        await api.close()
    counts.problems[:0] = ledger.violations
    result.reconnects = ledger.reconnects
    result.seconds = time.monotonic() - started
    return result


def _all_ready(api: HttpApi, cluster: Cluster) -> Callable[[], Awaitable[bool]]:
    async def ready() -> bool:
        return all(await asyncio.gather(*(api.ready(p.http_url) for p in cluster.processes)))

    return ready


async def _welcomed(clients: Sequence[Client]) -> None:
    for client in clients:
        if not await client.welcomed(CONNECT_TIMEOUT_S):
            raise RuntimeError(f"{client.name} was not welcomed within {CONNECT_TIMEOUT_S} s")


async def _settle(
    ctx: PhaseContext,
    publishers: list[Publisher],
    http: HttpPublisher,
    readers: list[Reader],
    recovery: Recovery,
) -> History:
    """Stop new publishes, retry the unsettled ones, let readers catch up, and wait
    (bounded) for readiness and presence; return the room's final history."""
    options = ctx.options
    for publisher in publishers:
        publisher.generating = False
    http.generating = False
    settled = await wait_until(
        holds(lambda: all(p.settled for p in publishers) and http.settled),
        options.settle_timeout_s,
    )
    if settled is None:
        left = sum(len(p.pending) + len(p.retry) for p in publishers) + len(http.retry)
        ctx.notes.append(
            f"{left} publish(es) still unsettled after {options.settle_timeout_s:.0f} s"
        )
    late = sum(p.late_copies for p in publishers)
    if late:
        ctx.notes.append(f"{late} own copies after outcome_unknown")
    ready_deadline = ctx.healed_at + options.ready_timeout_s - time.monotonic()
    await wait_until(holds(lambda: recovery.ready.since is not None), max(1.0, ready_deadline))
    history = await _history(ctx)

    # The last message history holds (a new epoch may hold none yet while its seq goes on).
    newest = max((int(m["seq"]) for m in history.messages), default=0)

    def caught_up() -> bool:
        return all(r.epoch == history.epoch and r.last_seq >= newest for r in readers)

    await wait_until(holds(caught_up), CATCH_UP_TIMEOUT_S)
    bound = options.ttl_s + options.presence_slack_s
    deadline = ctx.healed_at + bound - time.monotonic()
    await wait_until(holds(lambda: recovery.presence.since is not None), max(1.0, deadline))
    return await _history(ctx)


async def _history(ctx: PhaseContext) -> History:
    last: Exception | None = None
    for process in ctx.cluster.processes:  # any ready process will do
        try:
            return await ctx.api.history(process.http_url, ctx.room.item_id)
        except Exception as exc:  # noqa: BLE001 - try the next process, report the last
            last = exc
    raise RuntimeError(f"no process answered the history of {ctx.room.item_id}: {last}")


def _check(ctx: PhaseContext, fault: Fault, history: History, readers: list[Reader]) -> Counts:
    ledger = ctx.room.ledger
    epochs = {epoch for epoch, _ in ledger.seen} | {history.epoch}
    counts = check_history(ledger, history, epochs, fault.loses_data)
    for reader in readers:
        counts.problems.extend(check_reader(reader, history))
    no_id = sum(1 for r in readers for e in r.log if isinstance(e, Seen) and not e.has_id)
    if no_id:
        counts.problems.append(f"{no_id} live message frame(s) without their id (v1.1)")
    return counts


def _bounds(ctx: PhaseContext, recovery: Recovery, result: PhaseResult) -> None:
    """Readiness within its timeout and presence within the TTL plus the slack."""
    options, problems = ctx.options, result.counts.problems
    if result.ready_s is None or result.ready_s > options.ready_timeout_s:
        problems.append(
            f"/readyz not 200 on every process {options.ready_timeout_s:.0f} s after the fault "
            f"({recovery.ready.last_wrong})"
        )
    bound = options.ttl_s + options.presence_slack_s
    if result.presence_s is None or result.presence_s > bound:
        took = "never" if result.presence_s is None else f"after {result.presence_s:.1f} s"
        problems.append(
            f"presence right {took}, bound {bound:g} s (TTL + slack); last wrong: "
            f"{recovery.presence.last_wrong}"
        )
