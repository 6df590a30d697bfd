"""A whole run: start the cluster, run each fault in turn, report, clean up."""

import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field

from chaos.checks import Counts
from chaos.cluster import Cluster
from chaos.faults import FAULTS
from chaos.netns import Namespaces
from chaos.options import Options
from chaos.phase import PhaseResult, run_phase
from chaos.report import line, render


@dataclass
class RunResult:
    results: list[PhaseResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    workdir: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.errors and all(not r.problems for r in self.results)

    def report(self) -> str:
        verdict = "all invariants held" if self.passed else "INVARIANTS BROKEN"
        return f"{render(self.results, self.errors)}\n{verdict} in {self.seconds:.0f} s" + (
            f"; logs and backend data in {self.workdir}" if self.workdir else ""
        )


def validate(options: Options) -> list[str]:
    """Problems with the options themselves, found before anything starts."""
    problems = [f"unknown fault {name!r}" for name in options.faults if name not in FAULTS]
    problems += [
        f"fault {name!r} is not for the {options.backend} backend"
        for name in options.faults
        if name in FAULTS and options.backend not in FAULTS[name].backends
    ]
    wants_netns = any(FAULTS[n].needs_netns for n in options.faults if n in FAULTS)
    if wants_netns and not options.netns:
        problems.append("the partition fault needs --netns")
    if options.netns and (why := Namespaces.available()):
        problems.append(f"--netns: {why}")
    algorithms = options.env.get("ITEMROOMS_JWT_ALGORITHMS", "HS256")
    if "HS256" not in algorithms:
        problems.append("the kit mints HS256 tokens: ITEMROOMS_JWT_ALGORITHMS must include HS256")
    if not options.itemrooms.exists():
        problems.append(f"no itemrooms console script at {options.itemrooms}")
    if options.processes < 2:
        problems.append("at least two processes: presence and reaping are checked across them")
    return problems


async def run(options: Options, progress: bool = True) -> RunResult:
    options = options.with_secret()
    outcome = RunResult()
    started = time.monotonic()
    cluster = Cluster(options)
    try:
        await cluster.start()
        for number, name in enumerate(options.faults):
            try:
                result = await run_phase(cluster, options, FAULTS[name], number)
            except Exception as exc:  # noqa: BLE001 - reported as a failure of that fault
                detail = "".join(traceback.format_exception_only(exc)).strip()
                result = PhaseResult(name, Counts(problems=[f"the run itself failed: {detail}"]))
                if options.verbose:
                    traceback.print_exc()
            outcome.results.append(result)
            if progress:
                print(line(result), file=sys.stderr, flush=True)
    except Exception as exc:  # noqa: BLE001 - the cluster would not start
        outcome.errors.append("".join(traceback.format_exception_only(exc)).strip())
    finally:
        cluster.stop()
        outcome.seconds = time.monotonic() - started
    if outcome.passed and not options.keep:
        shutil.rmtree(cluster.workdir, ignore_errors=True)
    else:
        outcome.workdir = str(cluster.workdir)
    return outcome
