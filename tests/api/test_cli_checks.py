"""What the command tells an operator: --version, check, verify-token, and the README's
HTTP example run as written against a development server (what `make run` starts)."""

import re
import subprocess
from pathlib import Path

import pytest

from itemrooms.api.version import VERSION
from itemrooms.auth.tokens import mint_token
from tests.api.test_cli import ITEMROOMS, run
from tests.conftest import SECRET
from tests.support.server import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]


def test_version(tmp_path: Path) -> None:
    result = run("--version", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, f"itemrooms {VERSION}\n")


def test_help_reads_as_plain_text(tmp_path: Path) -> None:
    result = run("--help", cwd=tmp_path)
    assert result.returncode == 0 and "``" not in result.stdout and "check" in result.stdout


def test_check_prints_the_configuration_with_secrets_redacted(tmp_path: Path) -> None:
    result = run(
        "check",
        cwd=tmp_path,
        ITEMROOMS_JWT_SECRET=SECRET,
        ITEMROOMS_BACKEND="redis",
        ITEMROOMS_REDIS_URL=f"redis://:hunter2@127.0.0.1:{free_port()}/0",  # nobody listens
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    assert f"ITEMROOMS_JWT_SECRET=(set, {len(SECRET)} bytes)" in result.stdout
    assert re.search(r"ITEMROOMS_REDIS_URL=redis://:\*\*\*@127\.0\.0\.1:\d+/0", result.stdout)
    assert "cannot reach Redis" in result.stderr


def test_check_passes_and_names_a_misspelt_variable(tmp_path: Path) -> None:
    good = run("check", cwd=tmp_path, ITEMROOMS_JWT_SECRET=SECRET, ITEMROOMS_BACKEND="redis")
    assert good.returncode == 0, good.stderr
    assert "ITEMROOMS_BACKEND=redis" in good.stdout and "ok: settings valid" in good.stderr
    typo = run("check", cwd=tmp_path, ITEMROOMS_JWT_SECRET=SECRET, ITEMROOMS_BAKEND="redis")
    assert typo.returncode == 1
    assert "ITEMROOMS_BAKEND is not an itemrooms setting (did you mean ITEMROOMS_BACKEND?)" in (
        typo.stderr
    )
    invalid = run("check", cwd=tmp_path, ITEMROOMS_JWT_SECRET="short")
    assert invalid.returncode == 2 and "ITEMROOMS_JWT_SECRET" in invalid.stderr


@pytest.mark.parametrize(
    ("claims", "item", "status", "says"),
    [
        ({}, "42", 0, "item '42': may join, may publish"),
        ({"scope": ["items:read"]}, "42", 0, "may join, may not publish"),
        ({"items": ["sku-*"]}, "42", 1, "item '42': refused: 1008 forbidden"),
        ({"ttl_s": -120}, None, 1, "refused: 1008 token_expired"),
    ],
)
def test_verify_token_says_why(
    tmp_path: Path, claims: dict[str, object], item: str | None, status: int, says: str
) -> None:
    token = mint_token(SECRET, "alice", **claims)  # type: ignore[arg-type]
    result = run(
        "verify-token",
        token,
        *(["--item", item] if item else []),
        cwd=tmp_path,
        ITEMROOMS_JWT_SECRET=SECRET,
    )
    assert result.returncode == status, result.stdout + result.stderr
    assert says in result.stdout, result.stdout
    wrong_key = run(
        "verify-token", mint_token("k" * 48, "alice"), cwd=tmp_path, ITEMROOMS_JWT_SECRET=SECRET
    )
    assert wrong_key.returncode == 1 and "refused: 1008 invalid_token" in wrong_key.stdout


def test_the_readme_http_example_works_against_a_development_server(tmp_path: Path) -> None:
    block = re.search(
        r"Against `make run`.*?```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S
    )
    assert block is not None
    server = ServerProcess({"ITEMROOMS_ENV": "development"}, cwd=tmp_path).start()
    try:
        script = block.group(1).replace(".venv/bin/itemrooms", ITEMROOMS)
        script = script.replace("localhost:8000", f"127.0.0.1:{server.port}")
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,  # where the server keeps its development secret, as make run does
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        server.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"seq":1' in done.stdout and 'itemrooms_messages_published_total{via="http"} 1.0' in (
        done.stdout
    )


def test_the_server_says_at_start_what_is_in_force_and_what_it_ignored(tmp_path: Path) -> None:
    server = ServerProcess(
        {"ITEMROOMS_JWT_SECRET": SECRET, "ITEMROOMS_BAKEND": "redis"}, cwd=tmp_path
    ).start()
    server.stop()
    output = server.output
    assert "ITEMROOMS_BAKEND is not an itemrooms setting (did you mean ITEMROOMS_BACKEND?)" in (
        output
    )
    assert f"itemrooms {VERSION}: backend memory; origins the server's own origin" in output
    assert "50 publishes and 100 frames a second per connection" in output
    assert SECRET not in output
