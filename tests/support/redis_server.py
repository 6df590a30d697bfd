"""A private ``redis-server`` on a free port, for tests that stop and restart Redis.

``start()`` again after ``stop()`` restarts it on the same port and directory, so
with ``appendonly=True`` (fsync on every write) it comes back with its data.
"""

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.server import free_port


class PrivateRedis:
    def __init__(self, workdir: Path, *, appendonly: bool = False) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0, password: str | None = None) -> "PrivateRedis":
        """Start (or restart) it; with ``password``, every client without it is refused
        until ``open_gate()``, which lets a test set up a fault before anyone is back."""
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (Debian package redis-server)"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--dir", str(self.workdir), "--enable-debug-command", "local"]
        args += ["--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always"]
        if password is not None:
            args += ["--requirepass", password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client(password, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while True:  # readiness polling, bounded: redis-server has no ready signal
                try:
                    if client.ping():
                        return self
                except (redis.ConnectionError, redis.BusyLoadingError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def client(
        self,
        password: str | None = None,
        socket_timeout: float = 5.0,
        socket_connect_timeout: float = 5.0,
    ) -> "redis.Redis":
        """A client of the test's own, for admin commands (CLIENT PAUSE, CLIENT LIST…)."""
        return redis.Redis(
            port=self.port,
            password=password,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            retry=Retry(NoBackoff(), 0),  # a timeout is an answer here, not to be retried
        )

    def open_gate(self, password: str) -> None:
        with self.client(password) as client:
            client.config_set("requirepass", "")

    def stall(self, seconds: int) -> None:
        """``DEBUG SLEEP``: Redis answers nobody for ``seconds``. Returns once it has
        begun (a ping goes unanswered), not when it ends."""
        arg = str(seconds)
        command = f"*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n${len(arg)}\r\n{arg}\r\n"
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sleeper:
            sleeper.sendall(command.encode())
            probe = self.client(socket_timeout=0.2)
            deadline = time.monotonic() + 5
            try:
                while True:
                    assert time.monotonic() < deadline, "DEBUG SLEEP never began"
                    probe.ping()
            except redis.TimeoutError:
                return
            finally:
                probe.close()

    def answers(self) -> bool:
        """Whether Redis answers a ping at once (not stalled, not paused for reads)."""
        with self.client(socket_timeout=0.5, socket_connect_timeout=0.5) as client:
            try:
                return bool(client.ping())
            except (redis.ConnectionError, redis.TimeoutError):
                return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None
