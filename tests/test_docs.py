"""docs/PROTOCOL.md is the shared contract, copied for readers of this repository, and
then this implementation's extensions, under a heading of their own."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "PROTOCOL.md"
EXTENSIONS = "## Extensions in this implementation (itemrooms)"


def test_protocol_copy_matches_the_shared_contract() -> None:
    copy = (ROOT / "docs" / "PROTOCOL.md").read_text()
    assert copy.startswith("# Item rooms: the wire protocol")
    if os.environ.get("CI") == "true":  # CI lays shared/ beside the checkout: it must be there
        assert SHARED.exists(), f"{SHARED} is missing"
    shared, extensions = copy.split(EXTENSIONS, 1)
    assert extensions.strip(), "the extensions section is empty"
    if SHARED.exists():  # absent only in a standalone clone outside the workplace
        assert shared == SHARED.read_text() + "\n", "docs/PROTOCOL.md drifted from the contract"


def test_readme_opens_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    head = readme[: readme.index("## ")]
    assert "make run" in head and "make test" in head


def test_readme_shows_the_tested_integration_example_verbatim() -> None:
    """docs/testing-example is run by tests/client; the README must show exactly it."""
    readme = (ROOT / "README.md").read_text()
    for name in ("conftest.py", "test_example.py"):
        assert (ROOT / "docs" / "testing-example" / name).read_text() in readme, name
