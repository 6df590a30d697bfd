"""The README's example integration test passes when a user runs it as written."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "testing-example"


@pytest.mark.timeout(150)
def test_the_example_passes_as_a_user_runs_it(tmp_path: Path) -> None:
    # A copy outside the repository: only the installed package and the example's own
    # conftest count, not this project's pytest settings.
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-W",
            "error",
            "-p",
            "no:cacheprovider",
            # pytest-asyncio warns about this setting in any project that leaves it unset.
            "-o",
            "asyncio_default_fixture_loop_scope=function",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout, result.stdout
