"""One PNG per benchmark run, next to its JSON: bars for rates and sizes, CDFs for latencies.

Why optional: matplotlib is only the ``bench`` extra's (``pip install -e '.[bench]'``);
without it a run still writes its JSON and prints its table, and says that the
plot was skipped. The Agg backend needs no display.

- bars: one group per metric, one bar per server, the median of its runs with
  the min-max as an error bar; a panel may also get a labelled horizontal line
  (``marks``: the fan-out's load generator ceiling on its deliveries/s);
- latency: the distribution of every delivery's latency per server (all runs
  pooled) as a complementary CDF on log axes, so p50, p99 and the tail all show.
"""

import array
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import median

from bench.run import RunResult

Bars = tuple[str, Mapping[str, Sequence[float]]]  # (metric label, server -> one value per run)
MAX_POINTS = 20_000  # per latency curve: a sorted sample thinned to this many


def _pooled(runs: Sequence[RunResult]) -> list[float]:
    samples = array.array("d")
    for r in runs:
        for name in r.latency_files:
            path = Path(name)
            if path.is_file():
                samples.frombytes(path.read_bytes())
    return sorted(samples)


def write_plot(
    out_json: Path,
    bars: Sequence[Bars] = (),
    latency: Mapping[str, Sequence[RunResult]] | None = None,
    marks: Mapping[str, tuple[str, float]] | None = None,
) -> str:
    """Write ``<out_json stem>.png``; return a suffix for the run's last line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "; no plot (matplotlib missing: pip install -e '.[bench]')"
    panels = len(bars) + (1 if latency else 0)
    if not panels:
        return ""
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), squeeze=False)
    for ax, (label, values) in zip(axes[0], bars, strict=False):
        names = list(values)
        meds = [median(values[n]) if values[n] else 0.0 for n in names]
        low = [m - min(values[n], default=m) for n, m in zip(names, meds, strict=True)]
        high = [max(values[n], default=m) - m for n, m in zip(names, meds, strict=True)]
        ax.bar(names, meds, yerr=[low, high], capsize=4, color="C0")
        for x, m in enumerate(meds):
            ax.annotate(
                f"{m:,.0f}" if m >= 100 else f"{m:.1f}",
                (x, m),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        if marks and label in marks:
            text, value = marks[label]
            ax.axhline(value, color="C3", linestyle="--", linewidth=1)
            ax.annotate(
                f"{text}: {value:,.0f}",
                (0, value),
                xytext=(2, 2),
                textcoords="offset points",
                color="C3",
                fontsize=8,
            )
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3)
    if latency:
        ax = axes[0][-1]
        for name, runs in latency.items():
            ordered = _pooled(runs)
            if not ordered:
                continue
            step = max(1, len(ordered) // MAX_POINTS)
            xs = [v / 1e3 for v in ordered[::step]]
            n = len(xs)
            ys = [1 - i / n for i in range(n)]
            ax.plot(xs, ys, label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("publish to delivery, ms")
        ax.set_ylabel("fraction of deliveries slower")
        ax.set_title("latency (all runs pooled)")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.suptitle(out_json.stem, fontsize=9)
    fig.tight_layout()
    png = out_json.with_suffix(".png")
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return f"; plot: {png}"
