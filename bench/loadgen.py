"""One load-generator process: a share of the room's members, maybe the publisher.

Run by bench/run.py (pinned to the load core), not by hand. It speaks JSON
lines: it prints ``connected``, ``ready``, ``published``, ``done`` (or
``error``) events on stdout and reads ``publisher`` (the publisher's process
only: join now), ``go`` and ``quit`` commands from stdin.

Why it is built this way:
- picows, not the ``websockets`` client: picows parses frames, unmasks and
  buffers in compiled code and hands each frame to a plain callback
  (``Member.on_ws_frame``) with no coroutine, future or queue per frame. The
  ``websockets`` asyncio client cost 11-20 µs of CPU per received frame, as
  much as a server spends per delivery, so at 1,000 members the generator,
  not the server, was the bottleneck. bench/fanout.py measures this
  generator's own ceiling against bench/baselines/blast.py (a server that
  costs almost nothing per delivery) in every run and reports it;
- receivers never parse JSON for ``message`` frames. Every member of the room
  receives the same sequence, so the process builds, once, the bytes each
  message starts with up to its ``seq`` (``{"type":"message",…,"seq":18,``),
  learned from the first message; a member's next frame normally starts with
  the head of ``last_seq + 1``, and one ``startswith`` is the whole check.
  Anything else (a gap, a duplicate, welcome, presence, errors, close) takes
  the slow path, which parses ``seq`` as an integer slice;
- ``seq`` is checked per member, so a lost, duplicated or reordered message is
  counted, not just a short total;
- the ``ready`` barrier waits until every member knows every other one (the
  welcome's member list plus ``presence`` joins): itemrooms' join traffic
  (N²/2 presence frames for N members) is then over before the clock starts.
  Each member reports when its own count crosses the line, so the barrier is
  an event, not a poll;
- the publisher keeps at most ``window`` messages in flight, counted by its
  own copies coming back: each copy it receives sends the next publish from
  the same callback, so the room runs as fast as it absorbs messages without
  the generator queueing an unbounded backlog. It joins last, so every server
  queues its copy after everyone else's and the window roughly counts
  messages not yet sent to the whole room. ``published`` (with ``t0``, the
  time of the first send) is printed once the first window is out;
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
from time import monotonic, monotonic_ns
from typing import Any

import uvloop
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from bench.system import raise_nofile_limit
from itemrooms.auth.tokens import mint_token

SECRET_ENV = "BENCH_JWT_SECRET"
MESSAGE = b'{"type":"message"'
PRESENCE = b'{"type":"presence"'
JOIN = b'"event":"join"'
SEQ = b'"seq":'
SENT_AT = b'"t":'
CONNECT_CONCURRENCY = 50
CONNECT_TIMEOUT_S = 30.0
IDLE_TIMEOUT_S = 10.0  # no delivery for this long: the rest is reported as lost
CLOSE_TIMEOUT_S = 10.0
MAX_FRAME_BYTES = 2**22  # a welcome lists every member: 1,000 members are ~60 KB
TEXT = WSMsgType.TEXT
CLOSE = WSMsgType.CLOSE
CONTINUATION = WSMsgType.CONTINUATION
NO_MATCH = b"\xff"  # no JSON text starts with this byte


class State:
    """What the process's members share: totals, the barriers and the publisher's window."""

    def __init__(self, total_members: int, expected: int, messages: int, presence: bool) -> None:
        self.total_members = total_members
        self.expected = expected  # members this process opens, the publisher included
        self.messages = messages
        self.need = total_members - 1 if presence else 0  # others each member must know
        self.members: list[Member] = []
        self.knowing = 0  # members that know all the others (the ready barrier)
        self.complete = 0  # members that received every message
        self.delivered = 0
        self.last_delivery = 0.0
        self.timed = False
        # Messages sent before this (CLOCK_MONOTONIC ns) are warm-up: no latency sample.
        self.record_from_ns = 2**62
        self.latencies: array.array[float] = array.array("d")
        self.loop = asyncio.get_running_loop()
        self.all_know_all = asyncio.Event()
        self.done_event = asyncio.Event()
        self.publisher: Member | None = None
        self.window = 0
        self.sent = 0
        self.frames: list[bytes] = []  # the windowed publisher's publish frames, pre-encoded
        # heads[n]: what message n starts with, up to and with its seq digits and the comma
        # after them; NO_MATCH until the first message shows the prefix. Filled in place:
        # every member holds this same list.
        self.heads: list[bytes] = [NO_MATCH] * (messages + 2)
        self.prefix: bytes | None = None

    def learn(self, prefix: bytes, seq: int) -> None:
        """The first message's bytes before its seq digits make every later head."""
        if self.prefix is not None:
            return
        self.prefix = prefix
        self.heads[:] = [b"%s%d," % (prefix, n) for n in range(seq + self.messages + 2)]

    def check_ready(self) -> None:
        if self.knowing >= self.expected and len(self.members) >= self.expected:
            self.all_know_all.set()

    def pump(self) -> None:
        """Windowed publisher: send while fewer than ``window`` copies are outstanding."""
        pub = self.publisher
        if pub is None or pub.transport is None or pub.close is not None:
            return
        send, frames = pub.transport.send, self.frames
        while self.sent < self.messages and self.sent - pub.count < self.window:
            send(TEXT, frames[self.sent])
            self.sent += 1


class Member(WSListener):
    """One member's connection: its callbacks count what it receives.

    picows calls ``on_ws_frame`` for every frame, synchronously, with a view of
    its read buffer; nothing here awaits. The fast path (the message that
    follows the last one this member received) is one ``startswith`` and a few
    counters."""

    __slots__ = (
        "index",
        "server",
        "state",
        "publisher",
        "transport",
        "welcome",
        "known",
        "knows_all",
        "count",
        "last_seq",
        "gaps",
        "disorder",
        "other",
        "close",
        "last",
        "fragments",
        "heads",
    )

    def __init__(self, state: State, index: int, server: int, publisher: bool) -> None:
        super().__init__()
        self.index = index
        self.server = server  # index of the URL this member connected to
        self.state = state
        self.publisher = publisher
        self.transport: WSTransport | None = None
        self.welcome: asyncio.Future[dict[str, Any]] = state.loop.create_future()
        self.known = 0  # other members this one has been told about
        self.knows_all = False
        self.count = 0  # message frames received
        self.last_seq = 0
        self.gaps = 0  # seqs skipped over (lost)
        self.disorder = 0  # seqs at or below one already seen (duplicate or reordered)
        self.other = 0  # frames that are neither message nor presence (error frames...)
        self.close: tuple[int, str] | None = None  # close code and reason from the server
        self.last = 0.0  # when its last message frame arrived
        self.fragments: list[bytes] | None = None  # a fragmented text frame (rare)
        self.heads = state.heads  # the process's list, filled in place

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        raw = frame.get_payload_as_bytes()
        try:
            head = self.heads[self.last_seq + 1]
        except IndexError:  # beyond the messages expected: the slow path parses it
            head = NO_MATCH
        if raw.startswith(head) and frame.fin:
            self.last_seq += 1
            self.on_message(raw)
        else:
            self.slow_frame(transport, frame, raw)

    def on_message(self, raw: bytes) -> None:
        """Count one ``message`` frame (its ``seq`` is checked already)."""
        state = self.state
        if state.timed:
            k = raw.find(SENT_AT) + 4
            try:
                sent = int(raw[k : raw.find(b",", k)])
            except ValueError:  # no send time in the data: counted, no sample
                sent = -1
            if sent >= state.record_from_ns:
                state.latencies.append((monotonic_ns() - sent) / 1000)
        self.count += 1
        state.delivered += 1
        state.last_delivery = self.last = monotonic()
        if self.count == state.messages:
            state.complete += 1
            if state.complete == len(state.members):
                state.done_event.set()
        if self.publisher:
            state.pump()

    def check_seq(self, raw: bytes) -> bool:
        """The slow path's ``seq`` check (gaps, disorder); False if ``seq`` is no integer."""
        i = raw.find(SEQ) + 6
        try:
            seq = int(raw[i : raw.find(b",", i)])
        except ValueError:
            return False
        self.state.learn(raw[:i], seq)
        if seq > self.last_seq:
            self.gaps += seq - self.last_seq - 1
            self.last_seq = seq
        else:
            self.disorder += 1
        return True

    def slow_frame(self, transport: WSTransport, frame: WSFrame, raw: bytes) -> None:
        """Everything the fast path does not take: welcome, presence, close, errors, the
        first ``message`` (which teaches the fast path its heads), a message out of
        sequence, fragmented frames."""
        kind = frame.msg_type
        if kind == CLOSE:
            self.on_close(transport, raw)
            return
        if kind == CONTINUATION or not frame.fin:  # reassemble, then handle as one frame
            if kind != CONTINUATION:
                self.fragments = []
            if self.fragments is None:  # a continuation without a start
                self.other += 1
                return
            self.fragments.append(raw)
            if not frame.fin:
                return
            raw, self.fragments = b"".join(self.fragments), None
        elif kind != TEXT:
            self.other += 1
            return
        if raw.startswith(MESSAGE):
            if self.check_seq(raw):
                self.on_message(raw)
            else:
                self.other += 1
        elif raw.startswith(PRESENCE):
            self.set_known(self.known + (1 if JOIN in raw else -1))
        elif not self.welcome.done():
            self.on_welcome(raw)
        else:
            self.other += 1

    def on_welcome(self, raw: bytes) -> None:
        try:
            welcome = json.loads(raw)
        except ValueError:
            welcome = raw[:200].decode("utf-8", "replace")
        if not isinstance(welcome, dict) or welcome.get("type") != "welcome":
            error = RuntimeError(f"expected a welcome frame, got {str(welcome)[:200]}")
            self.welcome.set_exception(error)
            return
        self.set_known(len(welcome.get("members", ())))
        self.welcome.set_result(welcome)

    def on_close(self, transport: WSTransport, raw: bytes) -> None:
        """Record the server's close code and reason; complete the close handshake."""
        code = int.from_bytes(raw[:2], "big") if len(raw) >= 2 else 1005
        self.close = (code, raw[2:].decode("utf-8", "replace"))
        if not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode.OK)
        transport.disconnect()
        if not self.welcome.done():
            error = ConnectionError(f"closed before the welcome: {code} {self.close[1]}")
            self.welcome.set_exception(error)

    def set_known(self, known: int) -> None:
        """Count the members this one knows about; tell the ready barrier when it knows all."""
        self.known = known
        state = self.state
        knows_all = known >= state.need
        if knows_all != self.knows_all:
            self.knows_all = knows_all
            state.knowing += 1 if knows_all else -1
            if knows_all:
                state.check_ready()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.close is None:
            self.close = (1006, "")  # the TCP connection ended without a close frame
        if not self.welcome.done():
            self.welcome.set_exception(ConnectionError("disconnected before the welcome"))


def emit(event: str, **data: Any) -> None:
    print(json.dumps({"event": event, **data}), flush=True)


async def open_member(
    state: State,
    index: int,
    urls: list[str],
    auth: str,
    secret: str,
    sem: asyncio.Semaphore,
    publisher: bool = False,
) -> "Member":
    """Connect one member and wait for its welcome; its callbacks then run on their own."""
    server = index % len(urls)
    url = urls[server]
    token = mint_token(secret, f"bench-{index:05d}", ttl_s=3600)
    headers = {"Authorization": f"Bearer {token}"} if auth == "header" else None
    target = f"{url}?token={token}" if auth == "query" else url
    m = Member(state, index, server, publisher)
    async with sem:
        await ws_connect(
            lambda: m,
            target,
            extra_headers=headers,
            websocket_handshake_timeout=CONNECT_TIMEOUT_S,
            max_frame_size=MAX_FRAME_BYTES,
            enable_auto_ping=False,
        )
        await asyncio.wait_for(m.welcome, CONNECT_TIMEOUT_S)
    state.members.append(m)
    if m.knows_all:
        state.check_ready()
    return m


def publish_frames(messages: int, data_bytes: int) -> list[bytes]:
    pad = "x" * max(0, data_bytes - len('{"n":"000000","pad":""}'))
    return [
        json.dumps(
            {"type": "publish", "data": {"n": f"{n:06d}", "pad": pad}}, separators=(",", ":")
        ).encode()
        for n in range(messages)
    ]


async def publish_at_rate(state: State, rate: float, data_bytes: int) -> float:
    """Send ``messages`` publishes, message ``n`` at ``t0 + n / rate``; return ``t0``.

    The data carries the send time (``t``, CLOCK_MONOTONIC ns) after ``n``, which
    the members parse from the raw frame: ``{"n":"000001","t":…,"pad":"…"}``.
    The sleeps are the schedule itself (an open loop), not a wait for anything."""
    pub = state.publisher
    assert pub is not None and pub.transport is not None
    send = pub.transport.send
    pad = "x" * max(0, data_bytes - len('{"n":"000000","t":0000000000000000,"pad":""}'))
    t0 = monotonic()
    for n in range(state.messages):
        delay = t0 + n / rate - monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if pub.close is not None:
            break
        frame = f'{{"type":"publish","data":{{"n":"{n:06d}","t":{monotonic_ns()},"pad":"{pad}"}}}}'
        send(TEXT, frame.encode())
    return t0


async def wait_done(state: State, deadline_s: float) -> None:
    """Until every member has every message, nothing arrives for a while, or the deadline."""
    end = monotonic() + deadline_s
    seen, since = -1, monotonic()
    while not state.done_event.is_set() and monotonic() < end:
        if state.delivered != seen:
            seen, since = state.delivered, monotonic()
        elif monotonic() - since > IDLE_TIMEOUT_S:
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


async def close_all(state: State) -> None:
    """Start the close handshake on every open connection; wait (bounded) for them to end."""
    waits = []
    for m in state.members:
        t = m.transport
        if t is None or t.is_disconnected:
            continue
        if not t.is_close_frame_sent:
            t.send_close(WSCloseCode.OK)
        waits.append(t.wait_disconnected())
    try:
        await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), CLOSE_TIMEOUT_S)
    except TimeoutError:
        pass


async def run(args: argparse.Namespace) -> None:
    """connect -> (publisher joins last) -> ready -> go -> done -> quit."""
    secret = os.environ[SECRET_ENV]
    state = State(args.total, args.count, args.messages, args.presence)
    state.timed = args.rate > 0
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    # The publisher joins the room last, after every other process's members: every
    # server then sends it its copy of a message last, so its window counts messages
    # not yet sent to everyone.
    first = args.first + 1 if args.publisher else args.first
    indexes = range(first, args.first + args.count)
    try:
        opened = [open_member(state, i, args.url, args.auth, secret, sem) for i in indexes]
        await asyncio.wait_for(asyncio.gather(*opened), args.setup_timeout)
        emit("connected", members=len(state.members))
        if args.publisher:
            if await read_command() != "publisher":
                return
            state.publisher = await asyncio.wait_for(
                # Timed, it needs no acks: only the windowed publisher pumps on its copies.
                open_member(state, args.first, args.url, args.auth, secret, sem, not state.timed),
                args.setup_timeout,
            )
    except Exception as exc:  # report, then let the orchestrator stop us
        emit("error", stage="connect", detail=f"{type(exc).__name__}: {exc}"[:500])
        await read_command()
        return
    try:
        await asyncio.wait_for(state.all_know_all.wait(), args.setup_timeout)
    except TimeoutError:
        short = sum(1 for m in state.members if not m.knows_all)
        emit("error", stage="ready", detail=f"{short} members were not told about all others")
        await read_command()
        return
    emit("ready", members=len(state.members))
    if args.publisher and not state.timed:
        state.window = args.window
        state.frames = publish_frames(args.messages, args.data_bytes)
    if await read_command() != "go":
        return
    state.record_from_ns = time.monotonic_ns() + int(args.warmup_s * 1e9)
    if state.publisher is not None:
        if state.timed:
            t0 = await publish_at_rate(state, args.rate, args.data_bytes)
        else:
            # The first window now; then each copy of its own that the publisher
            # receives sends the next one (Member.on_message -> State.pump).
            t0 = monotonic()
            state.pump()
        emit("published", t0=t0)
    await wait_done(state, args.deadline)
    if args.latency_out:
        with open(args.latency_out, "wb") as f:
            state.latencies.tofile(f)
    emit("done", **summary(state, len(args.url)))
    await read_command()
    await close_all(state)


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
