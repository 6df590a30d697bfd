"""clients/js as an SPA developer gets it: `npm pack` gives a tarball, a TypeScript app
installs it (beside its own locked typescript), `tsc --strict` compiles typed usage,
and a misspelt event name does not compile. The packed code is the server's
/static/itemrooms.js, byte for byte, and Node imports it through the exports map."""

import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "js"
CONSUMER = Path(__file__).resolve().parent / "consumer"
STEP_TIMEOUT_S = 180
NPM_QUIET = ["--no-audit", "--no-fund", "--loglevel=error"]


def run(command: Sequence[str], cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(command), cwd=cwd, capture_output=True, text=True, timeout=STEP_TIMEOUT_S
    )
    if ok:
        assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    return done


def pack(work: Path) -> Path:
    """``npm pack`` of clients/js into ``work``: the tarball."""
    packed = run(["npm", "pack", "--pack-destination", str(work), *NPM_QUIET], PACKAGE)
    tarball = work / packed.stdout.strip().splitlines()[-1]
    assert tarball.is_file(), packed.stdout
    assert not (PACKAGE / "itemrooms.js").exists()  # postpack removed the copy
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
        files = ("package.json", "README.md", "itemrooms.js", "itemrooms.d.ts")
        files += ("react.js", "react.d.ts", "vue.js", "vue.d.ts")
        assert names == {f"package/{n}" for n in files}, names
        member = tar.extractfile("package/itemrooms.js")
        assert member is not None
        assert member.read() == (ROOT / "api" / "static" / "itemrooms.js").read_bytes()
    return tarball


def install(app: Path, tarball: Path) -> None:
    """The app's own locked dependencies, then the tarball, as a user installs it."""
    run(["npm", "ci", *NPM_QUIET], app)
    run(["npm", "install", "--no-save", *NPM_QUIET, str(tarball)], app)


@pytest.fixture(scope="module")
def consumer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The consumer app, with typescript from its lock and the packed tarball installed."""
    work = tmp_path_factory.mktemp("js")
    tarball = pack(work)
    app = work / "app"
    shutil.copytree(CONSUMER, app)
    install(app, tarball)
    return app


@pytest.mark.timeout(300)
def test_typed_usage_compiles_with_strict_tsc(consumer: Path) -> None:
    run(["npx", "--no-install", "tsc", "-p", "."], consumer)


@pytest.mark.timeout(300)
def test_a_misspelt_event_name_does_not_compile(consumer: Path) -> None:
    done = run(
        ["npx", "--no-install", "tsc", "--strict", "--noEmit", "--module", "nodenext"]
        + ["--moduleResolution", "nodenext", "--target", "es2022", "misspelt_event.ts"],
        consumer,
        ok=False,
    )
    assert done.returncode != 0
    assert "error TS2345: Argument of type '\"mesage\"'" in done.stdout, done.stdout


@pytest.mark.timeout(300)
def test_node_imports_it_through_the_exports_map(consumer: Path) -> None:
    script = (
        "const m = await import('itemrooms-client'); console.log(typeof m.connect, typeof m.Room)"
    )
    done = run(["node", "--input-type=module", "-e", script], consumer)
    assert done.stdout.strip() == "function function"
