"""api/ws_protocol.py against real uvicorn releases it does not support: one clear line
naming the supported range and what is missing, not a KeyError at startup (0.35) or an
AttributeError in the middle of a kick (0.50)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

UV = str(Path(sys.executable).with_name("uv"))
ITEMROOMS = str(Path(sys.executable).with_name("itemrooms"))


@pytest.fixture(scope="module")
def old_uvicorns(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each release alone in a directory put first on the path, shadowing the venv's."""
    found = {}
    for version in ("0.35.0", "0.50.0"):
        target = tmp_path_factory.mktemp(f"uvicorn-{version}")
        subprocess.run(
            [UV, "pip", "install", "--quiet", "--no-deps", "--target", str(target)]
            + [f"uvicorn=={version}", "--python", sys.executable],
            check=True,
            capture_output=True,
            timeout=120,
        )
        found[version] = target
    return found


@pytest.mark.parametrize(
    ("version", "problem"),
    [
        ("0.35.0", "its websockets-sansio implementation lacks stop_keepalive"),
        ("0.50.0", "its websockets-sansio implementation lacks close_timeout"),
    ],
)
def test_serve_refuses_an_unsupported_uvicorn_in_one_line(
    old_uvicorns: dict[str, Path], version: str, problem: str, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(old_uvicorns[version]), "ITEMROOMS_JWT_SECRET": "s" * 48}
    result = subprocess.run(
        [ITEMROOMS, "serve", "--port", "0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"itemrooms needs uvicorn>=0.54.0,<0.55 (installed: {version})" in line, line
    assert problem in line, line
