"""The wheel as a user gets it: built, installed into a fresh venv beside a project
(tests/packaging/shop) that has its own top-level ``api/`` and ``auth/`` packages and its
own conftest, and used from that project's tests through the plugin and the client.
Installing and uninstalling the project leaves itemrooms whole.

The venv gets exactly the locked versions (``uv export`` of uv.lock as constraints), so
this tests the wheel, not whatever PyPI has today; uv's cache makes it a few seconds.
"""

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOP = Path(__file__).resolve().parent / "shop"
EXAMPLE = ROOT / "docs" / "testing-example"
UV = str(Path(sys.executable).with_name("uv"))
STEP_TIMEOUT_S = 120


def run(command: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        list(command),
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_S,
    )
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def clean_env() -> dict[str, str]:
    """Nothing of this repository's venv leaks into the user's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.pop("UV_PROJECT_ENVIRONMENT", None)
    return env


@pytest.fixture(scope="module")
def user_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the user's project, its venv's python), with the wheel and the project installed."""
    work = tmp_path_factory.mktemp("wheel")
    run([UV, "build", "--wheel", "--quiet", "--out-dir", str(work / "dist")], ROOT)
    (wheel,) = (work / "dist").glob("itemrooms-*.whl")
    constraints = work / "constraints.txt"
    run(
        [UV, "export", "--frozen", "--no-hashes", "--no-emit-project", "--extra", "testing"]
        + ["--quiet", "--output-file", str(constraints)],
        ROOT,
    )
    project = work / "shop"
    shutil.copytree(SHOP, project, ignore=shutil.ignore_patterns("__pycache__"))
    # The README's example, as written (its conftest has nothing to enable).
    shutil.copy(EXAMPLE / "test_example.py", project / "tests" / "test_readme_example.py")
    venv = work / "venv"
    run([UV, "venv", "--quiet", "--python", sys.executable, str(venv)], work, clean_env())
    python = venv / "bin" / "python"
    install = [UV, "pip", "install", "--quiet", "--python", str(python), "-c", str(constraints)]
    run([*install, f"itemrooms[testing] @ {wheel.as_uri()}"], work, clean_env())
    run([*install, str(project)], work, clean_env())
    return project, python


def site_packages(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_S,
        check=True,
    )
    return Path(out.stdout.strip())


def assert_itemrooms_whole(python: Path, cwd: Path) -> None:
    """Every file the wheel installed is there, and the CLI and plugin import."""
    record = next(site_packages(python).glob("itemrooms-*.dist-info")) / "RECORD"
    installed = [line.split(",")[0] for line in record.read_text().splitlines()]
    missing = [p for p in installed if not (record.parent.parent / p).exists()]
    assert not missing, missing
    assert all(p.startswith(("itemrooms/", "itemrooms-", "../../../bin/")) for p in installed)
    env = {**clean_env(), "ITEMROOMS_JWT_SECRET": "s" * 48}
    token = run([str(python.with_name("itemrooms")), "token", "--sub", "x"], cwd, env)
    assert token.count(".") == 2
    run([str(python), "-c", "import itemrooms.api.testing, itemrooms.auth.tokens"], cwd, env)


def test_a_project_with_its_own_api_and_auth_uses_the_plugin_and_client(
    user_venv: tuple[Path, Path],
) -> None:
    project, python = user_venv
    out = run(
        [str(python), "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider", "tests"],
        project,
        clean_env(),
    )
    # The shop's own tests, the README's example: the fixtures came from the entry point.
    assert "4 passed" in out, out
    disabled = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:itemrooms", "-p", "no:cacheprovider"]
        + ["tests/test_shop_and_rooms.py"],
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_S,
    )
    assert "fixture 'itemrooms_server' not found" in disabled.stdout, disabled.stdout


def test_installing_and_uninstalling_the_project_leaves_itemrooms_whole(
    user_venv: tuple[Path, Path],
) -> None:
    project, python = user_venv
    packages = site_packages(python)
    assert (packages / "api" / "main.py").exists() and (packages / "auth" / "tokens.py").exists()
    assert_itemrooms_whole(python, project.parent)
    run([UV, "pip", "uninstall", "--quiet", "--python", str(python), "shop"], project.parent)
    assert not (packages / "api").exists() and not (packages / "auth").exists()
    assert_itemrooms_whole(python, project.parent)
