"""One load-generator process: a share of the room's members, maybe the publisher.

Run by bench/run.py (pinned to the load core), not by hand. It speaks JSON
lines: it prints ``connected``, ``ready``, ``published``, ``done`` (or
``error``) events on stdout and reads ``publisher`` (the publisher's process
only: join now), ``go`` and ``quit`` commands from stdin.

Why it is built this way:
- receivers never parse JSON for ``message`` frames: one prefix test and one
  integer slice for ``seq`` keep the generator's CPU per frame as small as
  the websockets client allows (it stays about as costly per frame as the
  servers, so bench/report.py says when the generator was the limit);
- ``seq`` is checked per member, so a lost, duplicated or reordered message is
  counted, not just a short total;
- the ``ready`` barrier waits until every member knows every other one (the
  welcome's member list plus ``presence`` joins): itemrooms' join traffic
  (N²/2 presence frames for N members) is then over before the clock starts;
- the publisher keeps at most ``window`` messages in flight, counted by its
  own copies coming back, so the room runs as fast as it absorbs messages
  without the generator queueing an unbounded backlog; it joins last, so both
  servers queue its copy after everyone else's and the window roughly counts
  messages not yet sent to the whole room;
- uvloop, as on the servers: the generator's CPU per frame is what limits it;
- ``--rate R`` (the latency scenario): the publisher sends R messages a second
  on a fixed schedule, whatever comes back (an open loop: a server that falls
  behind shows it as latency, not as a slower publisher), each with its
  ``CLOCK_MONOTONIC`` send time in nanoseconds as ``data.t``; every member
  subtracts it from its own clock on receipt (one clock for every process on
  the machine) and ``--latency-out`` gets the samples, float64 µs, except
  those of messages sent in the first ``--warmup-s`` after ``go``;
- ``--url`` may be given several times (one room served by several processes,
  e.g. two itemrooms processes sharing a Redis backend): member ``i`` connects
  to URL ``i mod n``, so the publisher (member 0) is on the first one, and the
  ``done`` event also counts deliveries per URL.
"""

import argparse
import array
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from auth.tokens import mint_token
from bench.system import raise_nofile_limit

SECRET_ENV = "BENCH_JWT_SECRET"
MESSAGE = b'{"type":"message"'
PRESENCE = b'{"type":"presence"'
JOIN = b'"event":"join"'
SEQ = b'"seq":'
SENT_AT = b'"t":'
CONNECT_CONCURRENCY = 50
CONNECT_TIMEOUT_S = 30.0
IDLE_TIMEOUT_S = 10.0  # no delivery for this long: the rest is reported as lost


@dataclass(slots=True)
class Member:
    index: int
    ws: ClientConnection
    known: int = 0  # other members this one has been told about
    count: int = 0  # message frames received
    last_seq: int = 0
    gaps: int = 0  # seqs skipped over (lost)
    disorder: int = 0  # seqs at or below one already seen (duplicate or reordered)
    other: int = 0  # frames that are neither message nor presence (error frames...)
    close: tuple[int, str] | None = None  # close code and reason from the server
    server: int = 0  # index of the URL this member connected to
    last: float = 0.0  # when its last message frame arrived


@dataclass
class State:
    total_members: int
    messages: int
    presence: bool
    members: list[Member] = field(default_factory=list)
    complete: int = 0
    last_delivery: float = 0.0
    delivered: int = 0
    done_event: asyncio.Event = field(default_factory=asyncio.Event)
    ack: asyncio.Future[None] | None = None
    publisher: Member | None = None
    latencies: "array.array[float]" = field(default_factory=lambda: array.array("d"))
    # Timed: messages sent before this (CLOCK_MONOTONIC ns) are warm-up, not recorded.
    record_from_ns: int = 2**62

    def all_know_all(self) -> bool:
        need = self.total_members - 1 if self.presence else 0
        return all(m.known >= need for m in self.members)


def emit(event: str, **data: Any) -> None:
    print(json.dumps({"event": event, **data}), flush=True)


async def read_member(state: State, m: Member, timed: bool = False) -> None:
    """Count what one member receives until its connection ends; ``timed``: and latencies."""
    recv, monotonic, monotonic_ns = m.ws.recv, time.monotonic, time.monotonic_ns
    target = state.messages
    record = state.latencies.append
    while True:
        try:
            raw = await recv(decode=False)
        except ConnectionClosed as exc:
            m.close = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1006, "")
            return
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
            if timed:
                j = raw.find(SENT_AT) + 4
                sent = int(raw[j : raw.find(b",", j)])
                if sent >= state.record_from_ns:
                    record((monotonic_ns() - sent) / 1000)
            m.count += 1
            state.delivered += 1
            state.last_delivery = m.last = monotonic()
            if m.count == target:
                state.complete += 1
                if state.complete == len(state.members):
                    state.done_event.set()
            if m is state.publisher and state.ack is not None and not state.ack.done():
                state.ack.set_result(None)
        elif raw.startswith(PRESENCE):
            m.known += 1 if JOIN in raw else -1
        else:
            m.other += 1


async def open_member(
    state: State,
    index: int,
    urls: list[str],
    auth: str,
    secret: str,
    sem: asyncio.Semaphore,
    timed: bool = False,
) -> Member:
    server = index % len(urls)
    url = urls[server]
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
            max_queue=64,
        )
        welcome = json.loads(await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT_S))
    if welcome.get("type") != "welcome":
        raise RuntimeError(f"expected a welcome frame, got {str(welcome)[:200]}")
    m = Member(index, ws, known=len(welcome.get("members", ())), server=server)
    state.members.append(m)
    asyncio.get_running_loop().create_task(read_member(state, m, timed))
    return m


async def publish(state: State, window: int, data_bytes: int) -> float:
    """Send ``messages`` publishes, at most ``window`` unacknowledged; return the start.

    It stops early if its connection is closed or nothing comes back for a while:
    the members then report what they missed."""
    pub = state.publisher
    assert pub is not None
    pad = "x" * max(0, data_bytes - len('{"n":"000000","pad":""}'))
    frames = [
        json.dumps(
            {"type": "publish", "data": {"n": f"{n:06d}", "pad": pad}}, separators=(",", ":")
        )
        for n in range(state.messages)
    ]
    loop = asyncio.get_running_loop()
    sent = 0
    t0 = time.monotonic()
    while sent < state.messages:
        try:
            while sent < state.messages and sent - pub.count < window:
                await pub.ws.send(frames[sent])
                sent += 1
        except ConnectionClosed:
            break  # closed by the server (evicted?): its reader records the close
        if pub.close is not None:
            break
        state.ack = loop.create_future()
        try:
            await asyncio.wait_for(state.ack, IDLE_TIMEOUT_S)
        except TimeoutError:
            break
    return t0


async def publish_at_rate(state: State, rate: float, data_bytes: int) -> float:
    """Send ``messages`` publishes, message ``n`` at ``t0 + n / rate``; return ``t0``.

    The data carries the send time (``t``, CLOCK_MONOTONIC ns) after ``n``, which
    the members parse from the raw frame: ``{"n":"000001","t":…,"pad":"…"}``."""
    pub = state.publisher
    assert pub is not None
    pad = "x" * max(0, data_bytes - len('{"n":"000000","t":0000000000000000,"pad":""}'))
    monotonic, monotonic_ns = time.monotonic, time.monotonic_ns
    t0 = monotonic()
    for n in range(state.messages):
        delay = t0 + n / rate - monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if pub.close is not None:
            break
        frame = f'{{"type":"publish","data":{{"n":"{n:06d}","t":{monotonic_ns()},"pad":"{pad}"}}}}'
        try:
            await pub.ws.send(frame)
        except ConnectionClosed:
            break
    return t0


async def wait_done(state: State, deadline_s: float) -> None:
    """Until every member has every message, nothing arrives for a while, or the deadline."""
    end = time.monotonic() + deadline_s
    seen, since = -1, time.monotonic()
    while not state.done_event.is_set() and time.monotonic() < end:
        if state.delivered != seen:
            seen, since = state.delivered, time.monotonic()
        elif time.monotonic() - since > IDLE_TIMEOUT_S:
            return
        try:
            await asyncio.wait_for(state.done_event.wait(), 0.5)
        except TimeoutError:
            pass


def summary(state: State, servers: int) -> dict[str, Any]:
    members = state.members
    closes: dict[str, int] = {}
    for m in members:
        if m.close is not None:
            key = f"{m.close[0]} {m.close[1]}".strip()
            closes[key] = closes.get(key, 0) + 1
    by_url = []
    for server in range(servers):
        mine = [m for m in members if m.server == server]
        by_url.append(
            {
                "members": len(mine),
                "delivered": sum(m.count for m in mine),
                "incomplete_members": sum(1 for m in mine if m.count < state.messages),
                "last_delivery": max((m.last for m in mine), default=0.0),
            }
        )
    return {
        "members": len(members),
        "delivered": state.delivered,
        "expected": len(members) * state.messages,
        "incomplete_members": sum(1 for m in members if m.count < state.messages),
        "gaps": sum(m.gaps for m in members),
        "disorder": sum(m.disorder for m in members),
        "other_frames": sum(m.other for m in members),
        "closes": closes,
        "last_delivery": state.last_delivery,
        "by_url": by_url,
    }


async def read_command() -> str:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    return line.strip() or "quit"  # EOF: the orchestrator is gone


async def wait_all_know_all(state: State, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not state.all_know_all():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.05)
    return True


async def run(args: argparse.Namespace) -> None:
    """connect -> (publisher joins last) -> ready -> go -> done -> quit."""
    secret = os.environ[SECRET_ENV]
    state = State(args.total, args.messages, args.presence)
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    # The publisher joins the room last, after every other process's members: both
    # servers then send it its copy of a message last, so its window counts messages
    # not yet sent to everyone.
    first = args.first + 1 if args.publisher else args.first
    indexes = range(first, args.first + args.count)
    timed = args.rate > 0
    try:
        opened = [open_member(state, i, args.url, args.auth, secret, sem, timed) for i in indexes]
        await asyncio.wait_for(asyncio.gather(*opened), args.setup_timeout)
        emit("connected", members=len(state.members))
        if args.publisher:
            if await read_command() != "publisher":
                return
            state.publisher = await asyncio.wait_for(
                open_member(state, args.first, args.url, args.auth, secret, sem, timed),
                args.setup_timeout,
            )
    except Exception as exc:  # report, then let the orchestrator stop us
        emit("error", stage="connect", detail=f"{type(exc).__name__}: {exc}"[:500])
        await read_command()
        return
    if not await wait_all_know_all(state, args.setup_timeout):
        short = sum(1 for m in state.members if m.known < args.total - 1)
        emit("error", stage="ready", detail=f"{short} members were not told about all others")
        await read_command()
        return
    emit("ready", members=len(state.members))
    if await read_command() != "go":
        return
    state.record_from_ns = time.monotonic_ns() + int(args.warmup_s * 1e9)
    if state.publisher is not None:
        if timed:
            t0 = await publish_at_rate(state, args.rate, args.data_bytes)
        else:
            t0 = await publish(state, args.window, args.data_bytes)
        emit("published", t0=t0)
    await wait_done(state, args.deadline)
    if args.latency_out:
        with open(args.latency_out, "wb") as f:
            state.latencies.tofile(f)
    emit("done", **summary(state, len(args.url)))
    await read_command()
    closing = asyncio.gather(*(m.ws.close() for m in state.members), return_exceptions=True)
    try:
        await asyncio.wait_for(closing, 10)
    except TimeoutError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", required=True, action="append", help="repeat: member i uses URL i mod n"
    )
    parser.add_argument("--auth", choices=("header", "query"), required=True)
    parser.add_argument("--first", type=int, required=True, help="index of the first member")
    parser.add_argument("--count", type=int, required=True, help="members in this process")
    parser.add_argument("--total", type=int, required=True, help="members in the room")
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--data-bytes", type=int, default=64)
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s, open loop (timed)")
    parser.add_argument("--warmup-s", type=float, default=0.0, help="timed: not recorded")
    parser.add_argument("--latency-out", default="", help="file for the latencies (float64 µs)")
    parser.add_argument("--presence", action="store_true", help="wait for presence joins")
    parser.add_argument("--publisher", action="store_true")
    parser.add_argument("--setup-timeout", type=float, default=90.0)
    parser.add_argument("--deadline", type=float, default=120.0)
    args = parser.parse_args()
    raise_nofile_limit()
    try:
        uvloop.run(run(args))
    except Exception as exc:
        emit("error", stage="run", detail=f"{type(exc).__name__}: {exc}"[:500])
    sys.stdout.flush()
    os._exit(0)  # the stdin reader thread may still be blocked in readline


if __name__ == "__main__":
    main()
