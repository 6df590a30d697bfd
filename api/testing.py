"""A pytest plugin for integration tests against a real itemrooms server.

Installing ``itemrooms[testing]`` (pytest, pytest-asyncio) registers it: its ``pytest11``
entry point loads it into every pytest run of that environment, and ``-p
no:itemrooms`` turns it off. Everything it adds is named ``itemrooms_*``. Fixtures:

- ``itemrooms_server``: a real ``itemrooms serve`` subprocess on a free loopback port,
  with a generated HS256 secret. Shared by the whole session unless the test is marked
  ``@pytest.mark.itemrooms(backend="redis", history_size=5, ...)``, which gives it a
  server of its own with those settings. With the shared server, give each test its own
  item ids (rooms and their history live as long as the server).
- ``itemrooms_server_factory(**settings)``: more servers, each with its own settings
  (``ITEMROOMS_<NAME>`` environment variables); stopped when the test ends.
- ``itemrooms_token(sub="alice", scope=..., items=..., ttl=...)``: a JWT for a server.
- ``itemrooms_client(item_id, sub="alice", **claims)``: ``async with`` it to join a room
  as an :class:`itemrooms.api.client.Room`.

Why a subprocess and not the app in-process: the server under test is the command you
deploy (uvicorn, its WebSocket implementation, signal handling, close frames), and the
test's event loop cannot hide a blocking call in the server. Settings come only from
the fixtures: inherited ``ITEMROOMS_*`` variables are dropped so tests do not depend on
the shell they run in. Every wait is bounded; the server's output is drained by a thread
(a full pipe would stall the server) and its last lines are kept for failure messages.

PYTEST_DONT_REWRITE: its asserts are internal checks, and a conftest may import this
module (for its types) before pytest loads it as a plugin, which would otherwise warn.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from itemrooms.api.client import Room, TokenSource, connect
from itemrooms.auth.tokens import mint_token

__all__ = [
    "ItemroomsServer",
    "itemrooms_client",
    "itemrooms_server",
    "itemrooms_server_factory",
    "itemrooms_token",
    "pytest_configure",
]

READ_WRITE = "items:read items:write"
OUTPUT_LINES = 500
STOP_TIMEOUT_S = 15.0
SOURCE_ROOT = str(Path(__file__).resolve().parent.parent)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _env_value(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Iterable):
        return ",".join(str(v) for v in value)
    return str(value)


class ItemroomsServer:
    """``itemrooms serve`` in a subprocess on a free loopback port.

    ``settings`` map to ``ITEMROOMS_<NAME>`` (``backend="redis"`` →
    ``ITEMROOMS_BACKEND=redis``; lists become comma lists). Use it as a context manager
    outside pytest, or through the fixtures.
    """

    def __init__(
        self,
        settings: Mapping[str, object] | None = None,
        *,
        cwd: Path | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        settings = dict(settings or {})
        self.secret: str = str(settings.pop("jwt_secret", None) or secrets.token_urlsafe(48))
        """The HS256 secret the server verifies tokens with."""
        self.settings = settings
        self.host = host
        self.port = 0
        self.cwd = cwd
        self.process: subprocess.Popen[str] | None = None
        self._lines: deque[str] = deque(maxlen=OUTPUT_LINES)
        self._pump: threading.Thread | None = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("ITEMROOMS_")}
        env.update({"ITEMROOMS_ENV": "production", "ITEMROOMS_JWT_SECRET": self.secret})
        # The server runs the code this process imported, even from an uninstalled checkout.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [SOURCE_ROOT, env.get("PYTHONPATH")]))
        env.update({f"ITEMROOMS_{k.upper()}": _env_value(v) for k, v in settings.items()})
        self.env = env

    # --- addresses ---------------------------------------------------------

    @property
    def http_url(self) -> str:
        """``http://127.0.0.1:PORT``: the HTTP API, /healthz, /metrics."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT``: the WebSocket base URL."""
        return f"ws://{self.host}:{self.port}"

    def ws_url(self, item_id: str) -> str:
        """The room's WebSocket URL, ``ws://127.0.0.1:PORT/items/{item_id}/ws``."""
        return f"{self.url}/items/{item_id}/ws"

    @property
    def output(self) -> str:
        """The server's last output lines (stdout and stderr)."""
        return "".join(self._lines)

    def mint(
        self,
        sub: str = "alice",
        *,
        scope: str | Iterable[str] = READ_WRITE,
        items: Iterable[str] | None = None,
        ttl: int = 3600,
        name: str | None = None,
        **extra: Any,
    ) -> str:
        """A token this server accepts; ``extra`` claims are added as they are."""
        scopes = scope.split() if isinstance(scope, str) else list(scope)
        return mint_token(
            self.secret, sub, scope=scopes, items=items, ttl_s=ttl, name=name, extra=extra
        )

    # --- life cycle --------------------------------------------------------

    def start(self, timeout: float = 30.0, attempts: int = 3) -> ItemroomsServer:
        """Start and wait (at most ``timeout`` seconds) until it accepts connections.

        A free port can be taken by someone else between choosing and binding it: the
        server then exits at once, and it is tried again on another port.
        """
        for attempt in range(attempts):
            self.port = free_port(self.host)
            self._spawn()
            if self._wait_listening(timeout):
                return self
            code = self.stop()
            if code is None or "cannot listen" not in self.output or attempt == attempts - 1:
                raise RuntimeError(
                    f"itemrooms serve did not start (exit code {code}):\n{self.output}"
                )
        raise AssertionError("unreachable")

    def restart(self, timeout: float = 30.0) -> ItemroomsServer:
        """Stop it (SIGTERM: clients get 1001 ``going_away``) and start it again on the same
        port, where reconnecting clients look for it. The memory backend comes back
        empty: its rooms have new epochs, and resuming clients learn ``recovered: false``.
        """
        port = self.port
        self.stop()
        self.port = port
        self._spawn()
        if not self._wait_listening(timeout):
            code = self.stop()
            raise RuntimeError(
                f"itemrooms serve did not restart (exit code {code}):\n{self.output}"
            )
        return self

    def _spawn(self) -> None:
        self._lines.clear()
        command = [sys.executable, "-m", "itemrooms.api.cli", "serve", "--host", self.host]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port)],
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        self._pump = threading.Thread(target=self._drain, daemon=True, name="itemrooms output")
        self._pump.start()

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)

    def _wait_listening(self, timeout: float) -> bool:
        """Poll the port: uvicorn listens only after the app's startup has completed."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """Stop gracefully (SIGTERM: clients get 1001 ``going_away``), killing it after
        ``timeout`` seconds; return the exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self._pump is not None:
            self._pump.join(timeout)
        if process.stdout is not None:
            process.stdout.close()
        return process.returncode

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> ItemroomsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


ServerFactory = Callable[..., ItemroomsServer]
TokenFactory = Callable[..., str]
ClientFactory = Callable[..., AbstractAsyncContextManager[Room]]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "itemrooms(**settings): give this test its own itemrooms server with these "
        "ITEMROOMS_* settings (e.g. backend='redis', jwt_leeway_s=0)",
    )


@pytest.fixture
def itemrooms_server_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerFactory]:
    """Start servers with settings of their own: ``itemrooms_server_factory(backend="redis")``.

    Each is stopped when the test ends.
    """
    started: list[ItemroomsServer] = []

    def start(**settings: object) -> ItemroomsServer:
        server = ItemroomsServer(settings, cwd=tmp_path_factory.mktemp("itemrooms"))
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def _itemrooms_shared_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ItemroomsServer]:
    with ItemroomsServer(cwd=tmp_path_factory.mktemp("itemrooms")) as server:
        yield server


@pytest.fixture
def itemrooms_server(
    request: pytest.FixtureRequest, itemrooms_server_factory: ServerFactory
) -> ItemroomsServer:
    """The server tests talk to: the session's shared one, or the test's own when it is
    marked ``@pytest.mark.itemrooms(**settings)``."""
    marker = request.node.get_closest_marker("itemrooms")
    if marker is not None:
        return itemrooms_server_factory(**marker.kwargs)
    server: ItemroomsServer = request.getfixturevalue("_itemrooms_shared_server")
    return server


@pytest.fixture
def itemrooms_token(itemrooms_server: ItemroomsServer) -> TokenFactory:
    """Mint tokens: ``itemrooms_token("bob", scope="items:read", items=["42"], ttl=60)``.

    Signed with ``itemrooms_server``'s secret, or pass ``server=`` for another one.
    """

    def mint(sub: str = "alice", *, server: ItemroomsServer | None = None, **claims: Any) -> str:
        return (server or itemrooms_server).mint(sub, **claims)

    return mint


@pytest.fixture
def itemrooms_client(itemrooms_server: ItemroomsServer) -> ClientFactory:
    """Join rooms: ``async with itemrooms_client("42", sub="bob", scope="items:read") as room``.

    Keyword arguments are token claims (``scope``, ``items``, ``ttl``, ``name``, others),
    except ``token`` (a token or token source to use instead of minting one), ``since``,
    ``auto_refresh``, ``server`` (another server than ``itemrooms_server``) and
    ``connect_options`` (more keyword arguments for :func:`itemrooms.api.client.connect`).
    """

    @asynccontextmanager
    async def join(
        item_id: str,
        sub: str = "alice",
        *,
        token: TokenSource | None = None,
        since: int | None = None,
        auto_refresh: bool = False,
        server: ItemroomsServer | None = None,
        connect_options: Mapping[str, Any] | None = None,
        **claims: Any,
    ) -> AsyncIterator[Room]:
        target = server or itemrooms_server
        source = token if token is not None else target.mint(sub, **claims)
        options: dict[str, Any] = {"proxy": None, **(connect_options or {})}
        async with connect(
            target.ws_url(item_id), token=source, since=since, auto_refresh=auto_refresh, **options
        ) as room:
            yield room

    return join
