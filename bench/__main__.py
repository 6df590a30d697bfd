"""Every scenario in turn: ``python -m bench`` (full) or ``python -m bench --quick``.

fan-out (itemrooms, plain, tutorial), then latency at half of the plain
server's fan-out capacity as measured by that fan-out run (median deliveries/s
/ members / 2), then idle memory, the connection storm, many small rooms and
the slow consumer. Each scenario writes its own JSON and PNG in
bench/results/ and prints its table; the exit status is non-zero when any of
them failed. The Redis scenario is not part of it (it needs redis-server):
``python -m bench.fanout --scenario redis``.
"""

import argparse
import json
import sys
from datetime import UTC, datetime

from bench import fanout, flood, latency, memory, slowconsumer, smallrooms, storm
from bench.servers import PLAIN
from bench.system import RESULTS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="every scenario's smoke run")
    p.add_argument("--no-pin", action="store_true", help="do not pin (a one-core machine)")
    args = p.parse_args(argv)
    common = (["--quick"] if args.quick else []) + (["--no-pin"] if args.no_pin else [])
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    statuses: dict[str, int] = {}
    fanout_json = RESULTS / f"fanout-{stamp}.json"
    print("=== fan-out ===", flush=True)
    statuses["fanout"] = fanout.main([*common, "--out", str(fanout_json)])
    rate: list[str] = []
    if fanout_json.is_file():
        report = json.loads(fanout_json.read_text())
        plain = report["summary"].get(PLAIN, {}).get("rate", 0.0)
        members = report["config"]["members"]
        if plain:
            rate = ["--rate", f"{0.5 * plain / members:.2f}", "--members", str(members)]
            print(f"\nlatency rate: half of plain's {plain:,.0f} deliveries/s / {members} members")
    print("\n=== latency ===", flush=True)
    latency_json = RESULTS / f"latency-{stamp}.json"
    statuses["latency"] = latency.main([*common, *rate, "--out", str(latency_json)])
    print("\n=== idle memory ===", flush=True)
    statuses["memory"] = memory.main([*common, "--out", str(RESULTS / f"memory-{stamp}.json")])
    print("\n=== connection storm ===", flush=True)
    statuses["storm"] = storm.main([*common, "--out", str(RESULTS / f"storm-{stamp}.json")])
    print("\n=== many small rooms ===", flush=True)
    small_json = RESULTS / f"smallrooms-{stamp}.json"
    statuses["smallrooms"] = smallrooms.main([*common, "--out", str(small_json)])
    print("\n=== slow consumer ===", flush=True)
    slow_json = RESULTS / f"slowconsumer-{stamp}.json"
    statuses["slowconsumer"] = slowconsumer.main([*common, "--out", str(slow_json)])
    print("\n=== frame flood ===", flush=True)
    flood_json = RESULTS / f"flood-{stamp}.json"
    statuses["flood"] = flood.main([*common, "--out", str(flood_json)])
    failed = [name for name, status in statuses.items() if status]
    verdicts = ", ".join(f"{name} {'FAILED' if s else 'ok'}" for name, s in statuses.items())
    print(f"\nscenarios: {verdicts}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
