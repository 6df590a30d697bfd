"""The fault-injection kit's short run, as ``make test`` runs it, once per backend: two
processes and two faults, every invariant checked after each. On a private Redis:
Redis restarted empty, and DEBUG SLEEP past the command timeout. On a private
PostgreSQL: PostgreSQL crashed and restarted, and every connection of a process
terminated. (A killed or a paused process has integration tests on both backends.)
About 15 s each on two cores; ``make chaos`` is the full run.

A subprocess, exactly as a user runs it, with none of this machine's ITEMROOMS_*
settings: the kit's defaults are what is tested here.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.options import SHORT_FAULTS

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 100.0  # a safety net: the run itself takes about half a minute


@pytest.mark.timeout(RUN_TIMEOUT_S + 10)
@pytest.mark.parametrize("backend", ["redis", "postgres"])
def test_the_short_run_breaks_no_invariant(backend: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITEMROOMS_")}
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "--short", "--backend", backend],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    for fault in SHORT_FAULTS[backend]:
        assert f"\n{fault} " in "\n" + done.stdout, report
    assert "all invariants held" in done.stdout, report
