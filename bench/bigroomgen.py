"""The big-room load process: a room that fills with N members in a few seconds.

Run by bench/bigroom.py (pinned to the load core), not by hand; it prints one JSON
line, ``done`` (or ``error``), at the end.

1. Connect the publisher and ``--probes`` members. The publisher sends ``--rate``
   messages a second on a fixed schedule (an open loop), each with its send time
   (``CLOCK_MONOTONIC`` ns, one clock for every process here); the probes measure
   each message's latency on receipt.
2. ``--quiet-s`` of that alone: the quiet latency.
3. The storm: ``--members`` new members, distinct users, connect on a fixed schedule
   over ``--join-s`` seconds (at most ``--concurrency`` handshakes in flight). Every
   member counts its presence frames (``presence``, ``presence_count``,
   ``presence_list``: whatever a server sends about who is here) and its welcome's
   bytes. The storm ends when every member was welcomed and every probe knows the
   whole room (from its welcome, join frames or counts): the presence traffic is
   then over. The server's (and database's) CPU time is read from /proc at both ends.

picows, as in bench/loadgen.py: each frame is one synchronous callback and a
``startswith``; only welcomes and the probes' messages are parsed.
"""

import argparse
import array
import asyncio
import json
import os
import sys
import time
from time import monotonic_ns
from typing import Any

import uvloop
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from bench.system import process_tree_cpu_s, raise_nofile_limit
from itemrooms.auth.tokens import mint_token

SECRET_ENV = "BENCH_JWT_SECRET"
MESSAGE = b'{"type":"message"'
PRESENCE = b'{"type":"presence'  # presence, presence_count, presence_list
COUNT = b'{"type":"presence_count"'
LIST = b'{"type":"presence_list"'
JOIN = b'"event":"join"'
MEMBER_COUNT = b'"member_count":'
SENT_AT = b'"t":'
TIMEOUT_S = 60.0
MAX_FRAME_BYTES = 2**24  # a v1 welcome lists every member


class Totals:
    """What the process's members add up."""

    def __init__(self, need: int) -> None:
        self.need = need  # others a probe must know for the storm to be over
        self.presence_frames = 0
        self.welcome_bytes = 0
        self.max_welcome = 0
        self.closes: dict[str, int] = {}
        self.knowing = 0  # probes that know the whole room
        self.settled = asyncio.Event()
        self.quiet: array.array[float] = array.array("d")  # latency samples, µs
        self.storm: array.array[float] = array.array("d")
        self.phase = self.quiet


class Member(WSListener):
    __slots__ = ("totals", "probe", "welcome", "known", "presence", "close", "transport")

    def __init__(self, totals: Totals, probe: bool) -> None:
        super().__init__()
        self.totals = totals
        self.probe = probe
        self.welcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.known = 0
        self.presence = 0
        self.close: str | None = None
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        raw = frame.get_payload_as_bytes()
        if raw.startswith(MESSAGE):
            if self.probe:
                k = raw.find(SENT_AT) + 4
                sent = int(raw[k : raw.find(b"}", k)])
                self.totals.phase.append((monotonic_ns() - sent) / 1000)
        elif raw.startswith(PRESENCE):
            self.presence += 1
            self.totals.presence_frames += 1
            if raw.startswith(COUNT) or raw.startswith(LIST):
                k = raw.find(MEMBER_COUNT) + len(MEMBER_COUNT)
                self.learn(int(raw[k : raw.find(b",", k)]) - 1)
            else:
                self.learn(self.known + (1 if JOIN in raw else -1))
        elif frame.msg_type == WSMsgType.CLOSE:
            code = int.from_bytes(raw[:2], "big") if len(raw) >= 2 else 1005
            self.closed(f"{code} {raw[2:].decode('utf-8', 'replace')}")
            if not transport.is_close_frame_sent:
                transport.send_close(WSCloseCode.OK)
            transport.disconnect()
        elif not self.welcome.done() and raw.startswith(b'{"type":"welcome"'):
            totals = self.totals
            totals.welcome_bytes += len(raw)
            totals.max_welcome = max(totals.max_welcome, len(raw))
            welcome = json.loads(raw)
            count = welcome.get("member_count")
            self.learn(count - 1 if isinstance(count, int) else len(welcome["members"]))
            self.welcome.set_result(None)

    def learn(self, known: int) -> None:
        if not self.probe:
            self.known = known
            return
        before = self.known >= self.totals.need
        self.known = known
        after = known >= self.totals.need
        if after != before:
            self.totals.knowing += 1 if after else -1

    def closed(self, why: str) -> None:
        if self.close is None:
            self.close = why
            self.totals.closes[why] = self.totals.closes.get(why, 0) + 1
        if not self.welcome.done():
            self.welcome.set_exception(ConnectionError(f"closed before its welcome: {why}"))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed("1006 (no close frame)")


async def open_member(url: str, token: str, member: Member, sem: asyncio.Semaphore) -> None:
    async with sem:
        await ws_connect(
            lambda: member,
            url,
            extra_headers={"Authorization": f"Bearer {token}"},
            websocket_handshake_timeout=TIMEOUT_S,
            max_frame_size=MAX_FRAME_BYTES,
            enable_auto_ping=False,
        )
        await asyncio.wait_for(member.welcome, TIMEOUT_S)


async def publish(publisher: Member, rate: float, stop: asyncio.Event) -> int:
    """Open loop: message k goes at start + k / rate, whatever came back."""
    assert publisher.transport is not None
    start, sent = time.monotonic(), 0
    while not stop.is_set():
        frame = b'{"type":"publish","data":{"t":%d}}' % monotonic_ns()
        publisher.transport.send(WSMsgType.TEXT, frame)
        sent += 1
        delay = start + sent / rate - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass
    return sent


def percentile(samples: "array.array[float]", q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000  # ms


async def run(args: argparse.Namespace) -> dict[str, Any]:
    secret = os.environ[SECRET_ENV]
    total = 1 + args.probes + args.members
    tokens = [mint_token(secret, f"big-{i:06d}", ttl_s=3600) for i in range(total)]
    totals = Totals(need=total - 1)
    sem = asyncio.Semaphore(args.concurrency)
    publisher = Member(totals, probe=False)
    await open_member(args.url, tokens[0], publisher, sem)
    probes = [Member(totals, probe=True) for _ in range(args.probes)]
    await asyncio.gather(
        *(open_member(args.url, tokens[1 + i], p, sem) for i, p in enumerate(probes))
    )
    stop = asyncio.Event()
    publishing = asyncio.create_task(publish(publisher, args.rate, stop))
    await asyncio.sleep(args.quiet_s)  # the quiet phase's length: the measurement itself

    totals.phase = totals.storm
    before = {pid: process_tree_cpu_s(pid) for pid in args.pid}
    started = time.monotonic()
    members = [Member(totals, probe=False) for _ in range(args.members)]

    async def paced(i: int, member: Member) -> None:
        await asyncio.sleep(max(0.0, started + i * args.join_s / args.members - time.monotonic()))
        await open_member(args.url, tokens[1 + args.probes + i], member, sem)

    joins = await asyncio.gather(
        *(paced(i, m) for i, m in enumerate(members)), return_exceptions=True
    )
    joined_s = time.monotonic() - started
    failed = [repr(e)[:200] for e in joins if isinstance(e, BaseException)]
    deadline = time.monotonic() + TIMEOUT_S
    while totals.knowing < len(probes) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # bounded polling of the probes' counters
    settled_s = time.monotonic() - started
    after = {pid: process_tree_cpu_s(pid) for pid in args.pid}
    stop.set()
    sent = await publishing
    everyone = [*probes, *members]
    frames = [m.presence for m in everyone]
    return {
        "members": args.members,
        "probes": args.probes,
        "joined_s": round(joined_s, 3),
        "settled_s": round(settled_s, 3),
        "settled": totals.knowing == len(probes),
        "cpu_s": {str(pid): round(after[pid] - before[pid], 3) for pid in args.pid},
        "presence_frames": totals.presence_frames,
        "presence_per_member_max": max(frames),
        "presence_per_member_mean": round(sum(frames) / len(frames), 2),
        "welcome_bytes": totals.welcome_bytes,
        "welcome_max_bytes": totals.max_welcome,
        "published": sent,
        "quiet_p50_ms": percentile(totals.quiet, 0.5),
        "quiet_p99_ms": percentile(totals.quiet, 0.99),
        "storm_p50_ms": percentile(totals.storm, 0.5),
        "storm_p99_ms": percentile(totals.storm, 0.99),
        "samples": [len(totals.quiet), len(totals.storm)],
        "failed_joins": failed[:5],
        "failed_count": len(failed),
        "closes": totals.closes,
        "load_cpu_s": round(time.process_time(), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.bigroomgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--join-s", type=float, default=10.0)
    parser.add_argument("--quiet-s", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--pid", type=int, action="append", default=[], help="CPU to read")
    args = parser.parse_args()
    raise_nofile_limit(args.members + args.probes + 1000)
    try:
        result = uvloop.run(run(args))
    except Exception as exc:  # reported to the driver, which fails the run
        print(json.dumps({"event": "error", "error": repr(exc)[:500]}), flush=True)
        sys.exit(1)
    print(json.dumps({"event": "done", **result}), flush=True)
    # Dropping 10,000 connections one close handshake at a time is not measured.
    os._exit(0)


if __name__ == "__main__":
    main()
