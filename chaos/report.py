"""The short report: one line per fault, then the evidence of every broken rule."""

from collections.abc import Sequence

from chaos.phase import PhaseResult

HEADER = (
    f"{'fault':<22} {'acked':>6} {'lost':>5} {'dup':>4} {'ep-lost':>7} {'refused':>7} "
    f"{'unsett':>6} {'ready_s':>7} {'pres_s':>6} {'reconn':>6}  result"
)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def line(result: PhaseResult) -> str:
    c = result.counts
    verdict = "ok" if not result.problems else f"FAILED ({len(result.problems)})"
    notes = f"  [{'; '.join(result.notes)}]" if result.notes else ""
    return (
        f"{result.fault:<22} {c.acked:>6} {c.lost:>5} {c.duplicated:>4} {c.epoch_lost:>7} "
        f"{c.refused:>7} {c.unsettled:>6} {_seconds(result.ready_s):>7} "
        f"{_seconds(result.presence_s):>6} {result.reconnects:>6}  {verdict}{notes}"
    )


def render(results: Sequence[PhaseResult], errors: Sequence[str] = ()) -> str:
    lines = [HEADER, *(line(r) for r in results)]
    for result in results:
        for problem in result.problems:
            lines.append(f"  {result.fault}: {problem}")
    lines.extend(f"  error: {error}" for error in errors)
    return "\n".join(lines)
