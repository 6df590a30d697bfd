"""Shared fixtures: a real server, tokens, and a health check for after each rejection."""

import asyncio
import secrets
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis

from chaos.postgres_server import PrivatePostgres
from itemrooms.auth.tokens import mint_token
from tests.support.client import join, recv_type, send_json
from tests.support.server import ServerProcess

# A user's project, installed and tested in a venv of its own by tests/packaging.
collect_ignore = ["packaging/shop"]

SECRET = secrets.token_urlsafe(48)
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
HISTORY_SIZE = 20
PRESENCE_TTL_S = 2

Mint = Callable[..., str]


def server_env(**overrides: Any) -> dict[str, str]:
    env = {
        "ITEMROOMS_JWT_SECRET": SECRET,
        "ITEMROOMS_ENV": "production",
        "ITEMROOMS_HISTORY_SIZE": str(HISTORY_SIZE),
        # Tests publish in bursts; the rate limit has tests of its own.
        "ITEMROOMS_RATE_LIMIT": "100000",
        "ITEMROOMS_HTTP_RATE_LIMIT": "100000",
        # Presence batches every 50 ms rather than 500: the same batching, coalescing and
        # order, without half a second of waiting in every test that watches two joins.
        # The default interval and the batches themselves have tests of their own
        # (tests/hub/test_presence.py, tests/api/test_settings.py).
        "ITEMROOMS_PRESENCE_INTERVAL_MS": "50",
    }
    env.update({f"ITEMROOMS_{k.upper()}": str(v) for k, v in overrides.items()})
    return env


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The default server, shared by the session: every test uses its own item ids."""
    proc = ServerProcess(server_env(), cwd=tmp_path_factory.mktemp("server")).start()
    yield proc
    proc.stop()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start a server with its own settings; stopped at the end of the test."""
    started: list[ServerProcess] = []

    def start(workers: int = 1, port: int | None = None, **overrides: Any) -> ServerProcess:
        proc = ServerProcess(server_env(**overrides), cwd=tmp_path, port=port, workers=workers)
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
async def postgres_schema() -> AsyncIterator[str]:
    """A schema of this test's own in the shared PostgreSQL, dropped afterwards."""
    schema = f"itemrooms_test_{uuid.uuid4().hex[:10]}"
    yield schema
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL of this test's own, to crash, empty, pause or cut off (the fault
    kit's, chaos/postgres_server.py); removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="itemrooms-pg-"))
    instance = PrivatePostgres(workdir)
    asyncio.run(instance.start())
    yield instance
    instance.kill()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis, deleted afterwards."""
    prefix = f"itemrooms-test-{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis()
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def start_redis_server(
    start_server: Callable[..., ServerProcess], redis_prefix: str
) -> Callable[..., ServerProcess]:
    """Start servers with the Redis backend, all sharing this test's key prefix."""

    def start(**overrides: Any) -> ServerProcess:
        return start_server(
            backend="redis", redis_prefix=redis_prefix, presence_ttl_s=PRESENCE_TTL_S, **overrides
        )

    return start


@pytest.fixture
def mint() -> Mint:
    def make(sub: str = "alice", **kw: Any) -> str:
        return mint_token(SECRET, sub, **kw)

    return make


@pytest.fixture
def item() -> str:
    """A fresh room for this test."""
    return f"it-{uuid.uuid4().hex[:12]}"


async def assert_healthy(server: ServerProcess) -> None:
    """The server still serves a room end to end: join, publish, receive."""
    assert server.process is not None and server.process.poll() is None, server.output
    room = f"health-{uuid.uuid4().hex[:8]}"
    ws, _ = await join(server, room, mint_token(SECRET, "health"))
    async with ws:
        await send_json(ws, {"type": "publish", "data": "ok", "ref": "h"})
        frame = await recv_type(ws, "message")
        assert frame["data"] == "ok" and frame["ref"] == "h"
