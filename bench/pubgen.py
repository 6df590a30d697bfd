"""Load generator of the publish-throughput scenario (bench/publishes.py): one process,
JSON lines on stdout, ``go`` and ``quit`` on stdin.

``--rooms`` rooms of ``--per-room`` publishers each (room ``r`` is ``<prefix>-r``),
every publisher a connection of its own with a user of its own. On ``go`` each keeps
``--window`` publishes in flight (a closed loop: the next one leaves when an earlier
one is answered, by its own copy or an error frame), so the rate is what the server
and its backend sustain, not a schedule. Publishing stops after ``--warmup-s`` +
``--duration-s``; answers that arrive inside the window after the warm-up are the
measured ones. A publisher's own copy is told by its sender (``"user":"pub-…"``),
which itemrooms and the plain baseline both send; copies come back in the order
their publishes went out, so one send time per publish in a deque gives each
answer's latency.

Every publisher also reads its room's messages and checks ``seq``: a gap is a lost
message, a ``seq`` at or below the last one a duplicate or reorder; after publishing
stops, every member must reach its room's highest ``seq``.
"""

import argparse
import array
import asyncio
import json
import sys
import time
from collections import deque
from dataclasses import dataclass, field

import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.roomsgen import CONNECT_CONCURRENCY, CONNECT_TIMEOUT_S, emit, read_command
from bench.samples import percentiles
from bench.system import raise_nofile_limit
from itemrooms.auth.tokens import mint_token

SECRET_ENV = "BENCH_JWT_SECRET"
MESSAGE = b'{"type":"message"'
ERROR = b'{"type":"error"'
SEQ = b'"seq":'


@dataclass(slots=True)
class Publisher:
    index: int
    room: int
    ws: ClientConnection
    mine: bytes  # how its own copies name their sender
    last_seq: int = 0
    sent: int = 0
    answered: int = 0
    acked: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    gaps: int = 0
    disorder: int = 0
    in_flight: deque[int] = field(default_factory=deque)  # send times, oldest first
    close: tuple[int, str] | None = None


@dataclass
class State:
    window: int
    pad: str
    stop_ns: int = 0  # no publish leaves after this
    measure: tuple[int, int] = (2**62, 2**62)  # answers inside it count
    in_window: int = 0
    latencies: "array.array[float]" = field(default_factory=lambda: array.array("d"))
    publishers: list[Publisher] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


def publish(state: State, p: Publisher) -> None:
    p.in_flight.append(time.monotonic_ns())
    p.sent += 1
    frame = f'{{"type":"publish","data":{{"n":{p.sent},"pad":"{state.pad}"}},"ref":"{p.sent}"}}'
    asyncio.get_running_loop().create_task(p.ws.send(frame))


def on_frame(state: State, p: Publisher, raw: bytes, now: int) -> None:
    answer = False
    if raw.startswith(MESSAGE):
        i = raw.find(SEQ) + 6
        seq = int(raw[i : raw.find(b",", i)])
        if seq > p.last_seq:
            p.gaps += seq - p.last_seq - 1
            p.last_seq = seq
        else:
            p.disorder += 1
        if p.mine in raw:
            p.acked += 1
            answer = True
    elif raw.startswith(ERROR):
        code = json.loads(raw).get("code", "?")
        p.errors[code] = p.errors.get(code, 0) + 1
        answer = True
    if not answer or not p.in_flight:
        return
    sent_at = p.in_flight.popleft()
    p.answered += 1
    if state.measure[0] <= now < state.measure[1]:
        state.in_window += 1
        state.latencies.append((now - sent_at) / 1000)
    if now < state.stop_ns:
        publish(state, p)
    elif not p.in_flight:
        state.changed.set()


async def read(state: State, p: Publisher) -> None:
    recv, clock = p.ws.recv, time.monotonic_ns
    while True:
        try:
            raw = await recv(decode=False)
        except ConnectionClosed as exc:
            p.close = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1006, "")
            state.changed.set()
            return
        if isinstance(raw, bytes):
            on_frame(state, p, raw, clock())


async def open_publisher(
    state: State, index: int, room: int, url: str, secret: str, sem: asyncio.Semaphore
) -> None:
    user = f"pub-{index:05d}"
    token = mint_token(secret, user, ttl_s=3600)
    async with sem:
        ws = await connect(
            url,
            additional_headers={"Authorization": f"Bearer {token}"},
            compression=None,
            proxy=None,
            open_timeout=CONNECT_TIMEOUT_S,
            close_timeout=2,
            ping_interval=None,
            max_size=2**22,
        )
        welcome = json.loads(await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT_S))
    if welcome.get("type") != "welcome":
        raise RuntimeError(f"expected a welcome frame, got {str(welcome)[:200]}")
    p = Publisher(index, room, ws, f'"user":"{user}"'.encode())
    p.last_seq = int(welcome.get("seq", 0))
    state.publishers.append(p)


async def run(args: argparse.Namespace, secret: str) -> None:
    state = State(args.window, "x" * args.data_bytes)
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    try:
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    open_publisher(
                        state,
                        room * args.per_room + k,
                        room,
                        args.url_template.format(room=f"{args.room_prefix}-{room}"),
                        secret,
                        sem,
                    )
                    for room in range(args.rooms)
                    for k in range(args.per_room)
                )
            ),
            args.setup_timeout,
        )
    except Exception as exc:  # noqa: BLE001 - reported to the orchestrator
        emit("error", stage="connect", detail=repr(exc)[:500])
        return
    for p in state.publishers:
        asyncio.get_running_loop().create_task(read(state, p))
    emit("connected", publishers=len(state.publishers))
    if await read_command() != "go":
        return
    go = time.monotonic_ns()
    start = go + int(args.warmup_s * 1e9)
    state.measure = (start, start + int(args.duration_s * 1e9))
    state.stop_ns = state.measure[1]
    for p in state.publishers:
        for _ in range(args.window):
            publish(state, p)
    await asyncio.sleep(args.warmup_s + args.duration_s)  # the measured run itself
    emit("published")
    await settle(state, args.deadline)
    report(state, args)


async def settle(state: State, deadline_s: float) -> None:
    """Every publish answered and every member at its room's last seq, or the deadline."""
    end = time.monotonic() + deadline_s

    def complete() -> bool:
        tops: dict[int, int] = {}
        for p in state.publishers:
            tops[p.room] = max(tops.get(p.room, 0), p.last_seq)
        return all(
            p.close is not None or (not p.in_flight and p.last_seq == tops[p.room])
            for p in state.publishers
        )

    while not complete() and time.monotonic() < end:
        state.changed.clear()
        try:
            await asyncio.wait_for(state.changed.wait(), 0.2)
        except TimeoutError:
            pass  # the members' last copies may still be on their way: look again


def report(state: State, args: argparse.Namespace) -> None:
    tops: dict[int, int] = {}
    for p in state.publishers:
        tops[p.room] = max(tops.get(p.room, 0), p.last_seq)
    errors: dict[str, int] = {}
    for p in state.publishers:
        for code, n in p.errors.items():
            errors[code] = errors.get(code, 0) + n
    closes: dict[str, int] = {}
    for p in state.publishers:
        if p.close is not None:
            key = f"{p.close[0]} {p.close[1]}"
            closes[key] = closes.get(key, 0) + 1
    emit(
        "done",
        publishers=len(state.publishers),
        rooms=len(tops),
        sent=sum(p.sent for p in state.publishers),
        acked=sum(p.acked for p in state.publishers),
        unanswered=sum(len(p.in_flight) for p in state.publishers),
        in_window=state.in_window,
        errors=errors,
        closes=closes,
        gaps=sum(p.gaps for p in state.publishers),
        disorder=sum(p.disorder for p in state.publishers),
        behind=sum(tops[p.room] - p.last_seq for p in state.publishers),
        latency_us=percentiles(sorted(state.latencies)),
    )


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.pubgen", description=__doc__.splitlines()[0])
    p.add_argument("--url-template", required=True, help="ws://…/items/{room}/ws")
    p.add_argument("--room-prefix", default="pub")
    p.add_argument("--rooms", type=int, required=True)
    p.add_argument("--per-room", type=int, required=True)
    p.add_argument("--window", type=int, required=True)
    p.add_argument("--duration-s", type=float, required=True)
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--data-bytes", type=int, default=64)
    p.add_argument("--setup-timeout", type=float, default=120.0)
    p.add_argument("--deadline", type=float, default=30.0)
    args = p.parse_args()
    import os

    secret = os.environ[SECRET_ENV]
    raise_nofile_limit()
    uvloop.run(run(args, secret))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
