"""The ranges pyproject.toml declares are true: no floor below what uv.lock holds, the
versions every CI run installs (make install: ``uv sync --locked``). A floor lowered
without testing the older version, or a lock moved past a floor without raising it,
fails here."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from itemrooms.api import uvicorn_internals

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LOCKED = {
    canonicalize_name(package["name"]): Version(package["version"])
    for package in tomllib.loads((ROOT / "uv.lock").read_text())["package"]
    if "version" in package
}


def declared() -> list[Requirement]:
    lines = list(PROJECT["dependencies"])
    for extra in PROJECT["optional-dependencies"].values():
        lines += extra
    return [Requirement(line) for line in lines if not line.startswith("itemrooms[")]


def test_every_floor_is_the_locked_version() -> None:
    wrong = {}
    for requirement in declared():
        floors = [s.version for s in requirement.specifier if s.operator == ">="]
        locked = LOCKED[canonicalize_name(requirement.name)]
        if floors != [str(locked)]:
            wrong[requirement.name] = (floors, str(locked))
    assert not wrong, f"declared floor vs locked version: {wrong}"


def test_every_locked_version_is_inside_its_declared_range() -> None:
    for requirement in declared():
        assert LOCKED[canonicalize_name(requirement.name)] in requirement.specifier, requirement


def test_the_import_check_names_the_declared_uvicorn_range() -> None:
    (uvicorn,) = [r for r in declared() if r.name == "uvicorn"]
    assert uvicorn.specifier == Requirement(f"uvicorn{uvicorn_internals.UVICORN_RANGE}").specifier


def test_make_install_bootstraps_the_locked_uv() -> None:
    pinned = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert pinned is not None and Version(pinned.group(1)) == LOCKED["uv"]
