"""Load generator of the many-small-rooms and slow-consumer scenarios: one process, JSON lines.

Run by bench/smallrooms.py and bench/slowconsumer.py (pinned to the load
core), not by hand. Like bench/loadgen.py it prints ``connected``, ``ready``,
``measured``, ``done`` (or ``error``) events on stdout and reads ``go`` and
``quit`` from stdin; it is its own small module so that those scenarios do not
depend on the fan-out generator's internals.

- ``--mode smallrooms``: ``--rooms`` rooms of ``--room-size`` members, room
  ``r`` being ``<prefix>-r``. On ``go`` every member publishes ``--rate`` times a
  second on its own fixed schedule (an open loop: message ``n`` of member ``j``
  at ``t0 + phase_j + n / rate``, whatever comes back), the phases spread evenly
  over the period and shuffled so that a room's members do not publish back
  to back. Publishing stops after ``--warmup-s`` + ``--duration-s``.
- ``--mode slow``: one room of ``--members``; member 0 publishes ``--rate``
  messages a second of ``--data-bytes`` for ``--warmup-s`` + ``--duration-s``.
  The last member joins last; with ``--slow`` it reads its ``welcome`` and then
  never calls ``recv`` again until the others are done (``max_queue=1``: the
  client library stops reading its socket after one frame, so the kernel's
  buffers fill and the server's writes to it back up). Then it reads what it
  can, until the connection closes or nothing comes for a while, and reports
  the close code and reason it finally saw.

Every publish carries its ``CLOCK_MONOTONIC`` send time in ns as ``data.t``
(one clock for every process of the machine); every member subtracts it from
its own clock on receipt, without parsing the JSON (prefix tests and integer
slices, as bench/loadgen.py does), and checks ``seq``: a gap is a lost
message, a ``seq`` at or below the last one a duplicate or reorder. Latency
samples of messages sent in the first ``--warmup-s`` are not kept.
"""

import argparse
import array
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.samples import percentiles
from bench.system import raise_nofile_limit
from itemrooms.auth.tokens import mint_token

SECRET_ENV = "BENCH_JWT_SECRET"
MESSAGE = b'{"type":"message"'
PRESENCE = b'{"type":"presence"'
JOIN = b'"event":"join"'
SEQ = b'"seq":'
SENT_AT = b'"data":{"t":'
CONNECT_CONCURRENCY = 50
CONNECT_TIMEOUT_S = 30.0
SLOW_DRAIN_CAP_S = 60.0  # the slow member reads again for at most this long


@dataclass(slots=True)
class Member:
    index: int
    room: int
    ws: ClientConnection
    known: int = 0  # other members this one has been told about (presence)
    count: int = 0  # message frames received
    last_seq: int = 0
    gaps: int = 0  # seqs skipped over (lost)
    disorder: int = 0  # seqs at or below one already seen (duplicate or reordered)
    other: int = 0  # frames that are neither message nor presence
    close: tuple[int, str] | None = None  # as the client saw it
    sent: int = 0  # publishes this member handed to its connection


@dataclass
class State:
    room_size: int
    presence: bool
    members: list[Member] = field(default_factory=list)
    latencies: "array.array[float]" = field(default_factory=lambda: array.array("d"))
    record_from_ns: int = 2**62  # messages sent before this are warm-up
    window: tuple[int, int] = (2**62, 2**62)  # ns; deliveries received inside it count
    in_window: int = 0
    delivered: int = 0
    last_delivery_ns: int = 0
    tracked: set[int] = field(default_factory=set)  # member indexes whose latency counts

    def all_know_all(self, skip: int | None = None) -> bool:
        need = self.room_size - 1 if self.presence else 0
        return all(m.known >= need for m in self.members if m.index != skip)


def emit(event: str, **data: Any) -> None:
    print(json.dumps({"event": event, **data}), flush=True)


async def read_command() -> str:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    return line.strip() or "quit"  # EOF: the orchestrator is gone


def on_frame(state: State, m: Member, raw: bytes | str, now: int) -> None:
    """Count one received frame: seq check, latency, window count."""
    if not isinstance(raw, bytes):
        m.other += 1
    elif raw.startswith(MESSAGE):
        i = raw.find(SEQ) + 6
        seq = int(raw[i : raw.find(b",", i)])
        if seq > m.last_seq:
            m.gaps += seq - m.last_seq - 1
            m.last_seq = seq
        else:
            m.disorder += 1
        m.count += 1
        if m.index in state.tracked:
            j = raw.find(SENT_AT) + 12
            sent = int(raw[j : raw.find(b",", j)])
            if sent >= state.record_from_ns:
                state.latencies.append((now - sent) / 1000)
            state.delivered += 1
            state.last_delivery_ns = now
            if state.window[0] <= now < state.window[1]:
                state.in_window += 1
    elif raw.startswith(PRESENCE):
        m.known += 1 if JOIN in raw else -1
    else:
        m.other += 1


async def read_member(state: State, m: Member) -> None:
    recv, clock = m.ws.recv, time.monotonic_ns
    while True:
        try:
            raw = await recv(decode=False)
        except ConnectionClosed as exc:
            m.close = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1006, "")
            return
        on_frame(state, m, raw, clock())


async def open_member(
    state: State,
    index: int,
    room: int,
    url: str,
    auth: str,
    secret: str,
    sem: asyncio.Semaphore,
    *,
    reader: bool = True,
) -> Member:
    token = mint_token(secret, f"bench-{index:05d}", ttl_s=3600)
    headers = {"Authorization": f"Bearer {token}"} if auth == "header" else None
    target = f"{url}?token={token}" if auth == "query" else url
    async with sem:
        ws = await connect(
            target,
            additional_headers=headers,
            compression=None,
            proxy=None,
            open_timeout=CONNECT_TIMEOUT_S,
            close_timeout=2,
            ping_interval=None,
            max_size=2**22,
            # A reader buffers a few frames; the slow member stops reading after one.
            max_queue=64 if reader else 1,
        )
        welcome = json.loads(await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT_S))
    if welcome.get("type") != "welcome":
        raise RuntimeError(f"expected a welcome frame, got {str(welcome)[:200]}")
    m = Member(index, room, ws, known=len(welcome.get("members", ())))
    m.last_seq = int(welcome.get("seq", 0))
    state.members.append(m)
    if reader:
        asyncio.get_running_loop().create_task(read_member(state, m))
    return m


def publish_frame(t_ns: int, n: int, pad: str) -> str:
    return f'{{"type":"publish","data":{{"t":{t_ns},"n":{n},"pad":"{pad}"}}}}'


async def wait_quiet(
    done: Callable[[], bool],
    progress: Callable[[], int],
    idle_s: float,
    deadline_s: float,
    step: float = 0.1,
) -> str:
    """Until ``done()``, no ``progress()`` change for ``idle_s``, or the deadline: which."""
    end = time.monotonic() + deadline_s
    seen, since = progress(), time.monotonic()
    while not done():
        now = time.monotonic()
        if now > end:
            return "deadline"
        current = progress()
        if current != seen:
            seen, since = current, now
        elif now - since > idle_s:
            return "idle"
        await asyncio.sleep(step)
    return "complete"


# --- many small rooms -----------------------------------------------------------------


async def publish_schedule(
    state: State, args: argparse.Namespace, t0: float, lags: "array.array[float]"
) -> None:
    """Every member ``--rate`` times a second on its own phase, until the end; open loop."""
    members = sorted(state.members, key=lambda m: m.index)
    count = len(members)
    period = 1.0 / args.rate
    # Phases spread evenly over the period; a multiplicative shuffle (coprime stride)
    # keeps a room's consecutive members far apart in time.
    stride = next(s for s in (7919, 7907, 7901, 1) if count % s or s == 1)
    slot = {m.index: (i * stride) % count for i, m in enumerate(members)}
    order = sorted(members, key=lambda m: slot[m.index])
    end = t0 + args.warmup_s + args.duration_s
    pad = "x" * max(0, args.data_bytes - len('{"t":0000000000000000,"n":0000,"pad":""}'))
    monotonic, monotonic_ns, sleep = time.monotonic, time.monotonic_ns, asyncio.sleep
    n = 0
    while True:
        base = t0 + n * period
        if base >= end:
            return
        for m in order:
            due = base + slot[m.index] * period / count
            if due >= end:
                return
            delay = due - monotonic()
            if delay > 0:
                await sleep(delay)
            if m.close is not None:
                continue
            lags.append(max(0.0, monotonic() - due) * 1e6)
            try:
                await m.ws.send(publish_frame(monotonic_ns(), n, pad))
            except ConnectionClosed:
                continue
            m.sent += 1
        n += 1


def smallrooms_summary(state: State, lags: "array.array[float]") -> dict[str, Any]:
    by_room: dict[int, list[Member]] = {}
    for m in state.members:
        by_room.setdefault(m.room, []).append(m)
    expected = lost = 0
    rooms_lost = rooms_disorder = 0
    worst: dict[str, Any] = {}
    for room, members in by_room.items():
        sent = sum(m.sent for m in members)
        room_lost = 0
        for m in members:
            expected += sent
            room_lost += max(0, sent - (m.count - m.disorder))
        lost += room_lost
        disorder = sum(m.disorder for m in members)
        rooms_lost += room_lost > 0
        rooms_disorder += disorder > 0
        if room_lost and room_lost > worst.get("lost", 0):
            worst = {"room": room, "sent": sent, "lost": room_lost, "disorder": disorder}
    closes: dict[str, int] = {}
    for m in state.members:
        if m.close is not None:
            key = f"{m.close[0]} {m.close[1]}".strip()
            closes[key] = closes.get(key, 0) + 1
    return {
        "members": len(state.members),
        "rooms": len(by_room),
        "sent": sum(m.sent for m in state.members),
        "expected": expected,
        "delivered": state.delivered,
        "in_window": state.in_window,
        "lost": lost,
        "gaps": sum(m.gaps for m in state.members),
        "disorder": sum(m.disorder for m in state.members),
        "rooms_with_loss": rooms_lost,
        "rooms_with_disorder": rooms_disorder,
        "worst_room": worst,
        "other_frames": sum(m.other for m in state.members),
        "closes": closes,
        "last_delivery_ns": state.last_delivery_ns,
        "latency_us": percentiles(sorted(state.latencies)),
        "schedule_lag_us": percentiles(sorted(lags)),
    }


async def run_smallrooms(args: argparse.Namespace, secret: str) -> None:
    state = State(args.room_size, args.presence)
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    plan = []
    for room in range(args.first_room, args.first_room + args.room_count):
        url = args.url_template.format(room=f"{args.room_prefix}-{room}")
        for k in range(args.room_size):
            plan.append((room * args.room_size + k, room, url))
    try:
        opened = [open_member(state, i, r, u, args.auth, secret, sem) for i, r, u in plan]
        await asyncio.wait_for(asyncio.gather(*opened), args.setup_timeout)
        emit("connected", members=len(state.members))
        if not await ready(state, args.setup_timeout, None):
            return
    except Exception as exc:
        emit("error", stage="connect", detail=f"{type(exc).__name__}: {exc}"[:500])
        await read_command()
        return
    state.tracked = {m.index for m in state.members}
    emit("ready", members=len(state.members))
    if await read_command() != "go":
        return
    t0 = time.monotonic() + 0.05
    start_ns = int(t0 * 1e9) + int(args.warmup_s * 1e9)
    state.record_from_ns = start_ns
    state.window = (start_ns, start_ns + int(args.duration_s * 1e9))
    lags: array.array[float] = array.array("d")
    await publish_schedule(state, args, t0, lags)
    emit("published", t0=t0)
    by_room: dict[int, list[Member]] = {}
    for m in state.members:
        by_room.setdefault(m.room, []).append(m)
    sent = {room: sum(m.sent for m in ms) for room, ms in by_room.items()}

    def complete() -> bool:
        return all(m.count >= sent[m.room] or m.close is not None for m in state.members)

    outcome = await wait_quiet(complete, lambda: state.delivered, args.idle_s, args.deadline)
    if args.latency_out:
        with open(args.latency_out, "wb") as f:
            state.latencies.tofile(f)
    emit("done", wait=outcome, window_s=args.duration_s, **smallrooms_summary(state, lags))
    await read_command()
    await close_all(state)


async def ready(state: State, timeout: float, skip: int | None) -> bool:
    """Whether every member (but ``skip``) was told about every other one in time."""
    end = time.monotonic() + timeout
    while not state.all_know_all(skip):
        if time.monotonic() > end:
            need = state.room_size - 1
            short = sum(1 for m in state.members if m.known < need and m.index != skip)
            emit("error", stage="ready", detail=f"{short} members not told about all others")
            await read_command()
            return False
        await asyncio.sleep(0.05)
    return True


async def close_all(state: State) -> None:
    closing = asyncio.gather(*(m.ws.close() for m in state.members), return_exceptions=True)
    try:
        await asyncio.wait_for(closing, 10)
    except TimeoutError:
        pass


# --- one room, one slow consumer ------------------------------------------------------


async def publish_at_rate(state: State, pub: Member, args: argparse.Namespace, t0: float) -> str:
    """Member 0 publishes at ``--rate`` until the end; how it stopped.

    A send that cannot complete (a server that stopped reading the publisher, as
    the tutorial's frozen room does) ends publishing at the end time plus a grace
    period; the frame it had handed to its connection still counts as sent."""
    pad = "x" * max(0, args.data_bytes - len('{"t":0000000000000000,"n":000000,"pad":""}'))
    total = int(args.rate * (args.warmup_s + args.duration_s))
    end = t0 + args.warmup_s + args.duration_s
    monotonic, monotonic_ns = time.monotonic, time.monotonic_ns
    for n in range(total):
        delay = t0 + n / args.rate - monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if pub.close is not None:
            return "publisher closed"
        frame = publish_frame(monotonic_ns(), n, pad)
        pub.sent += 1
        try:
            await asyncio.wait_for(pub.ws.send(frame), max(0.5, end + args.idle_s - monotonic()))
        except ConnectionClosed:
            return "publisher closed"
        except TimeoutError:
            return "publisher blocked (the server stopped reading it)"
    return "complete"


def slow_summary(state: State, others: list[Member], sent: int) -> dict[str, Any]:
    closes: dict[str, int] = {}
    for m in others:
        if m.close is not None:
            key = f"{m.close[0]} {m.close[1]}".strip()
            closes[key] = closes.get(key, 0) + 1
    received = [m.count - m.disorder for m in others]
    return {
        "others": len(others),
        "sent": sent,
        "expected": sent * len(others),
        "delivered": sum(m.count for m in others),
        "lost": sum(max(0, sent - r) for r in received),
        "others_missing_some": sum(1 for r in received if r < sent),
        "min_received": min(received, default=0),
        "gaps": sum(m.gaps for m in others),
        "disorder": sum(m.disorder for m in others),
        "other_frames": sum(m.other for m in others),
        "closes": closes,
        "latency_us": percentiles(sorted(state.latencies)),
    }


async def drain_slow(state: State, slow: Member, sent: int, idle_s: float) -> dict[str, Any]:
    """The slow member reads again: what it gets, and how its connection ends."""
    started = time.monotonic()
    end = started + SLOW_DRAIN_CAP_S
    outcome = "open"
    while slow.count - slow.disorder < sent:
        left = min(idle_s, end - time.monotonic())
        if left <= 0:
            outcome = "open (read cap)"
            break
        try:
            raw = await asyncio.wait_for(slow.ws.recv(decode=False), left)
        except TimeoutError:
            outcome = f"open, nothing for {idle_s:g}s"
            break
        except ConnectionClosed as exc:
            slow.close = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1006, "")
            outcome = f"closed {slow.close[0]} {slow.close[1]}".strip()
            break
        on_frame(state, slow, raw, time.monotonic_ns())
    else:
        outcome = "open, got every message"
    return {
        "received": slow.count,
        "gaps": slow.gaps,
        "disorder": slow.disorder,
        "last_seq": slow.last_seq,
        "close": list(slow.close) if slow.close else None,
        "outcome": outcome,
        "read_s": round(time.monotonic() - started, 2),
    }


async def run_slow(args: argparse.Namespace, secret: str) -> None:
    state = State(args.members, args.presence)
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    last = args.members - 1
    try:
        opened = [open_member(state, i, 0, args.url, args.auth, secret, sem) for i in range(last)]
        await asyncio.wait_for(asyncio.gather(*opened), args.setup_timeout)
        # The last member joins last: it is told about nobody joining after it.
        tail = open_member(state, last, 0, args.url, args.auth, secret, sem, reader=not args.slow)
        await asyncio.wait_for(tail, args.setup_timeout)
        emit("connected", members=len(state.members))
        if not await ready(state, args.setup_timeout, last):
            return
    except Exception as exc:
        emit("error", stage="connect", detail=f"{type(exc).__name__}: {exc}"[:500])
        await read_command()
        return
    by_index = {m.index: m for m in state.members}
    pub, tail_member = by_index[0], by_index[last]
    others = [m for m in state.members if m.index != last]
    state.tracked = {m.index for m in others}
    emit("ready", members=len(state.members))
    if await read_command() != "go":
        return
    t0 = time.monotonic() + 0.05
    start_ns = int(t0 * 1e9) + int(args.warmup_s * 1e9)
    state.record_from_ns = start_ns
    state.window = (start_ns, start_ns + int(args.duration_s * 1e9))
    stopped = await publish_at_rate(state, pub, args, t0)
    sent = pub.sent
    emit("published", t0=t0, sent=sent, stopped=stopped)

    def complete() -> bool:
        return all(m.count - m.disorder >= sent or m.close is not None for m in others)

    outcome = await wait_quiet(complete, lambda: state.delivered, args.idle_s, args.deadline)
    measured = slow_summary(state, others, sent)
    emit("measured", wait=outcome, stopped=stopped, **measured)
    if args.latency_out:
        with open(args.latency_out, "wb") as f:
            state.latencies.tofile(f)
    result: dict[str, Any] = {"last_member": {"received": tail_member.count}}
    if args.slow:
        before = state.delivered
        result["slow"] = await drain_slow(state, tail_member, sent, args.idle_s)
        # A room frozen behind the slow member (the tutorial's) may move again now.
        await wait_quiet(complete, lambda: state.delivered, min(args.idle_s, 2.0), 10.0)
        result["delivered_to_others_after_slow_read"] = state.delivered - before
        result["lost_after_slow_read"] = slow_summary(state, others, sent)["lost"]
    else:
        result["last_member"] = {
            "received": tail_member.count,
            "gaps": tail_member.gaps,
            "disorder": tail_member.disorder,
            "close": list(tail_member.close) if tail_member.close else None,
        }
    emit("done", **result)
    await read_command()
    await close_all(state)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("smallrooms", "slow"), required=True)
    p.add_argument("--auth", choices=("header", "query"), required=True)
    p.add_argument("--presence", action="store_true", help="the server sends presence joins")
    p.add_argument("--rate", type=float, required=True, help="publishes/s (per member/room)")
    p.add_argument("--duration-s", type=float, required=True, help="measured publishing time")
    p.add_argument("--warmup-s", type=float, default=1.0, help="publishing before it")
    p.add_argument("--data-bytes", type=int, default=64)
    p.add_argument("--idle-s", type=float, default=5.0, help="nothing arrives: stop waiting")
    p.add_argument("--deadline", type=float, default=60.0, help="wait for deliveries at most")
    p.add_argument("--setup-timeout", type=float, default=120.0)
    p.add_argument("--latency-out", default="", help="file for the latencies (float64 µs)")
    # smallrooms
    p.add_argument("--url-template", default="", help="ws://host:port/items/{room}/ws")
    p.add_argument("--room-prefix", default="small")
    p.add_argument("--first-room", type=int, default=0)
    p.add_argument("--room-count", type=int, default=0)
    p.add_argument("--room-size", type=int, default=4)
    # slow
    p.add_argument("--url", default="")
    p.add_argument("--members", type=int, default=100)
    p.add_argument("--slow", action="store_true", help="the last member stops reading")
    args = p.parse_args()
    raise_nofile_limit()
    secret = os.environ[SECRET_ENV]
    main_coro = run_smallrooms if args.mode == "smallrooms" else run_slow
    try:
        uvloop.run(main_coro(args, secret))
    except Exception as exc:
        emit("error", stage="run", detail=f"{type(exc).__name__}: {exc}"[:500])
    sys.stdout.flush()
    os._exit(0)  # the stdin reader thread may still be blocked; sockets close with us


if __name__ == "__main__":
    main()
