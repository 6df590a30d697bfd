"""The ``itemrooms`` command as a user runs it: exit codes and one-line errors."""

import os
import subprocess
import sys
from pathlib import Path

from itemrooms.auth.tokens import TokenVerifier
from tests.conftest import SECRET

ITEMROOMS = str(Path(sys.executable).with_name("itemrooms"))


def run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ITEMROOMS_")}
    return subprocess.run(
        [ITEMROOMS, *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_token_prints_a_verifiable_token(tmp_path: Path) -> None:
    result = run(
        "token",
        "--sub",
        "alice",
        "--scope",
        "items:read",
        "--items",
        "42,sku-*",
        "--ttl",
        "60",
        cwd=tmp_path,
        ITEMROOMS_JWT_SECRET=SECRET,
    )
    assert result.returncode == 0, result.stderr
    claims = TokenVerifier(algorithms=("HS256",), hmac_secret=SECRET).verify(result.stdout.strip())
    assert (claims.sub, claims.scope, claims.items) == ("alice", {"items:read"}, ("42", "sku-*"))
    assert claims.exp - claims.iat == 60  # type: ignore[operator]


def test_missing_secret_outside_development_is_a_one_line_error(tmp_path: Path) -> None:
    for command in (["token", "--sub", "a"], ["serve", "--port", "1"]):
        result = run(*command, cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr.startswith("itemrooms: error: ITEMROOMS_JWT_SECRET is not set")
        assert result.stderr.count("\n") == 1


def test_short_secret_outside_development_is_refused(tmp_path: Path) -> None:
    result = run("serve", cwd=tmp_path, ITEMROOMS_JWT_SECRET="tooshort")
    assert result.returncode == 2 and "at least 32" in result.stderr


def test_several_workers_need_a_shared_backend(tmp_path: Path) -> None:
    result = run("serve", "--workers", "2", cwd=tmp_path, ITEMROOMS_JWT_SECRET=SECRET)
    assert result.returncode == 2
    assert "ITEMROOMS_BACKEND=redis" in result.stderr and result.stderr.count("\n") == 1


def test_bad_arguments(tmp_path: Path) -> None:
    assert run("serve", "--port", "abc", cwd=tmp_path).returncode == 2
    assert run("token", cwd=tmp_path, ITEMROOMS_JWT_SECRET=SECRET).returncode == 2  # --sub missing
    result = run("token", "--sub", "a", "--ttl", "0", cwd=tmp_path, ITEMROOMS_JWT_SECRET=SECRET)
    assert result.returncode == 2 and "--ttl" in result.stderr
    result = run("serve", cwd=tmp_path, ITEMROOMS_JWT_SECRET=SECRET, ITEMROOMS_BACKEND="kafka")
    assert result.returncode == 2 and result.stderr.startswith(
        "itemrooms: error: ITEMROOMS_BACKEND"
    )


def test_bad_ports_hosts_and_worker_counts_are_one_line_errors(tmp_path: Path) -> None:
    for args in (["--port", "70000"], ["--port", "-5"], ["--workers", "0"], ["--workers", "x"]):
        result = run("serve", *args, cwd=tmp_path, ITEMROOMS_JWT_SECRET=SECRET)
        assert result.returncode == 2, args
        assert result.stderr.strip().splitlines()[-1].startswith("itemrooms serve: error:"), args
    result = run("serve", "--host", "999.1.1.1", cwd=tmp_path, ITEMROOMS_JWT_SECRET=SECRET)
    assert result.returncode == 2 and result.stderr.startswith(
        "itemrooms: error: --host '999.1.1.1'"
    )
    assert result.stderr.count("\n") == 1


def test_a_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        result = run("serve", "--port", port, cwd=tmp_path, ITEMROOMS_JWT_SECRET=SECRET)
    assert result.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert result.stderr.count("\n") == 1
