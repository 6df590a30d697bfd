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

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from statistics import median
from typing import Any

from bench.run import RunResult
from bench.samples import load_samples

Bars = tuple[str, Mapping[str, Sequence[float]]]  # (metric label, server -> one value per run)
MAX_POINTS = 20_000  # per latency curve: a sorted sample thinned to this many


def write_png(out_json: Path, panels: int, draw: Callable[[Sequence[Any]], None]) -> str:
    """``<out_json stem>.png`` with ``panels`` side by side, drawn by ``draw(axes)``;
    the suffix of the run's last line ("; plot: …", "; no plot …", or "" for no panels)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "; no plot (matplotlib missing: pip install -e '.[bench]')"
    if not panels:
        return ""
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), squeeze=False)
    draw(list(axes[0]))
    fig.suptitle(out_json.stem, fontsize=9)
    fig.tight_layout()
    png = out_json.with_suffix(".png")
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return f"; plot: {png}"


def bar_panel(ax: Any, title: str, values: Mapping[str, Sequence[float]]) -> None:
    """One bar per server: the median of its runs, min-max as the error bar."""
    names = list(values)
    meds = [median(values[n]) if values[n] else 0.0 for n in names]
    low = [m - min(values[n], default=m) for n, m in zip(names, meds, strict=True)]
    high = [max(values[n], default=m) - m for n, m in zip(names, meds, strict=True)]
    ax.bar(names, meds, yerr=[low, high], capsize=4, color="C0")
    for x, m in enumerate(meds):
        label = f"{m:,.0f}" if m >= 100 else f"{m:.1f}"
        ax.annotate(label, (x, m), ha="center", va="bottom", fontsize=8)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)


def ccdf_panel(
    ax: Any,
    title: str,
    curves: Mapping[str, list[float]],
    legend_fontsize: float | None = 8,
) -> None:
    """Latency distributions (µs samples, sorted) as complementary CDFs on log axes
    (``legend_fontsize`` None: matplotlib's default)."""
    for label, ordered in curves.items():
        if not ordered:
            continue
        step = max(1, len(ordered) // MAX_POINTS)
        xs = [v / 1e3 for v in ordered[::step]]
        n = len(xs)
        ax.plot(xs, [1 - i / n for i in range(n)], label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("publish to delivery, ms")
    ax.set_ylabel("fraction of deliveries slower")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=legend_fontsize)


def write_plot(
    out_json: Path,
    bars: Sequence[Bars] = (),
    latency: Mapping[str, Sequence[RunResult]] | None = None,
    marks: Mapping[str, tuple[str, float]] | None = None,
) -> str:
    """Write ``<out_json stem>.png``; return a suffix for the run's last line."""

    def draw(axes: Sequence[Any]) -> None:
        for ax, (label, values) in zip(axes, bars, strict=False):
            bar_panel(ax, label, values)
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
        if latency:
            curves = {
                name: load_samples([f for r in runs for f in r.latency_files])
                for name, runs in latency.items()
            }
            ccdf_panel(axes[-1], "latency (all runs pooled)", curves, legend_fontsize=None)

    return write_png(out_json, len(bars) + (1 if latency else 0), draw)
