"""Latency samples: the float64 files (µs) the load generators write, and their percentiles.

Why a module of its own: the orchestrators (bench/run.py, the small-rooms and
slow-consumer scenarios, the plots) read the same files, and the load
generator bench/roomsgen.py computes the same percentiles; this imports only
the standard library, so a generator that uses it still starts fast.
"""

import array
from collections.abc import Sequence
from pathlib import Path


def load_samples(files: Sequence[str]) -> list[float]:
    """Every latency sample (µs) in these float64 files, sorted; missing files are skipped."""
    samples: array.array[float] = array.array("d")
    for name in files:
        path = Path(name)
        if path.is_file():
            samples.frombytes(path.read_bytes())
    return sorted(samples)


def percentiles(ordered: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99, p99.9 and max of sorted samples (nearest rank) and their count;
    empty without samples."""
    if not ordered:
        return {}
    n = len(ordered)
    pick = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "p999": 0.999}
    result = {key: ordered[min(n - 1, int(q * n))] for key, q in pick.items()}
    result["max"] = ordered[-1]
    result["samples"] = float(n)
    return {key: round(v, 1) for key, v in result.items()}
