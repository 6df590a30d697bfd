"""Connection storm: N handshakes as fast as the server takes them, 10% with a bad token.

    python -m bench.storm            # 3,000 handshakes, 3 interleaved runs per server
    python -m bench.storm --quick    # smoke run: 300 handshakes

Every token is minted before the clock starts; every 10th (``--bad-every``) is
signed with another secret. ``--load-procs`` conngen processes open them all,
``--concurrency`` at a time each, and keep the accepted ones open (members of
rooms of ``--room-size``, as after a restart when everybody reconnects).
handshakes/s = attempts (good and bad) / first attempt to last outcome.

Checked: every good token is welcomed; for itemrooms every bad token is seen
by the client as close 1008 ``invalid_token`` (the protocol's promise); the
baselines refuse with HTTP 403 and are only counted. The target in issue 7:
itemrooms at least the plain websockets server's handshakes/s.
"""

import sys

from bench.connbench import parse_args, run_all
from bench.conns import ConnResult
from bench.servers import ITEMROOMS

INVALID = "close 1008 invalid_token"


def check(name: str, runs: list[ConnResult]) -> list[str]:
    problems = []
    for r in runs:
        tag = f"{name} run {r.run}"
        if not r.ok or r.error:
            problems.append(f"{tag}: {(r.error or 'no connection').splitlines()[0]}")
            continue
        if set(r.good) != {"welcome"}:
            problems.append(f"{tag}: not every good token was welcomed: {r.good}")
        if name == ITEMROOMS and set(r.bad) - {INVALID}:
            problems.append(f"{tag}: a bad token not seen as {INVALID!r}: {r.bad}")
        if "welcome" in r.bad:
            problems.append(f"{tag}: a bad token was accepted: {r.bad}")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = parse_args("storm", argv, full=3000, quick=300, procs=2)
    bad_pct = 100 / args.bad_every if args.bad_every else 0
    title = (
        f"connection storm: {args.connections:,} handshakes, {bad_pct:.0f}% bad tokens, "
        f"{args.load_procs} conngen process(es) x {args.concurrency} in flight, "
        f"{args.runs} run(s) per server, interleaved; medians "
        f"(target: itemrooms >= plain handshakes/s)"
    )
    metrics = {
        "handshakes/s": lambda r: r.handshakes_per_s,
        "srv µs/handshake": lambda r: r.server_us_per_handshake,
        "srv CPU %": lambda r: r.server_cpu_pct,
        "load CPU %": lambda r: r.load_cpu_pct,
    }

    def line(r: ConnResult) -> str:
        return (
            f"{r.handshakes_per_s:7,.0f} handshakes/s in {r.elapsed_s:.2f}s, server "
            f"{r.server_us_per_handshake:6.0f} µs/handshake {r.server_cpu_pct:3.0f}%, "
            f"loadgen {r.load_cpu_pct:3.0f}% | good {r.good} | bad {r.bad}"
        )

    return run_all("storm", args, metrics, title, check, line)


if __name__ == "__main__":
    sys.exit(main())
