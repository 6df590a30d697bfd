"""A real itemrooms server in a subprocess, started through the installed CLI."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

RUNNING = "Uvicorn running on"
STARTED = "Application startup complete"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """``itemrooms serve`` on a free loopback port; its output is kept in ``lines``.

    ``command`` runs something else on that port instead (``{port}`` is replaced), such
    as uvicorn serving a host app that embeds itemrooms under ``prefix``."""

    def __init__(
        self,
        env: Mapping[str, str],
        cwd: Path,
        port: int | None = None,
        workers: int = 1,
        command: Sequence[str] | None = None,
        prefix: str = "",
    ) -> None:
        self.port = port or free_port()
        self.workers = workers
        self.command = command
        self.prefix = prefix
        self.env = {**os.environ, **env}
        self.cwd = cwd
        self.lines: list[str] = []
        self._started = threading.Event()
        self._new_line = threading.Condition()
        self._exited = threading.Event()
        self.process: subprocess.Popen[str] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, item_id: str, query: str = "") -> str:
        url = f"ws://127.0.0.1:{self.port}{self.prefix}/items/{item_id}/ws"
        return url + (f"?{query}" if query else "")

    def start(self, timeout: float = 30.0) -> "ServerProcess":
        itemrooms = Path(sys.executable).with_name("itemrooms")
        command = [
            str(itemrooms),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        if self.command is not None:
            command = [part.replace("{port}", str(self.port)) for part in self.command]
        self.process = subprocess.Popen(
            command,
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()
        if not self._started.wait(timeout):
            self.stop()
            raise RuntimeError("server did not start:\n" + self.output)
        if self._exited.is_set():
            self.stop()
            raise RuntimeError("server exited at start:\n" + self.output)
        if self.workers > 1:
            self._wait_listening(timeout)
        return self

    def _wait_listening(self, timeout: float) -> None:
        """Workers log their start just before they listen: poll, bounded, until they do."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        running, started = False, 0
        for line in self.process.stdout:
            with self._new_line:
                self.lines.append(line)
                self._new_line.notify_all()
            running = running or RUNNING in line
            started += STARTED in line
            if running and started >= self.workers:
                self._started.set()
        self._exited.set()
        self._started.set()  # unblock start() if the server died

    def wait_for_output(self, text: str, timeout: float = 5.0) -> bool:
        """Block until ``text`` appears in the server's output (or the timeout)."""
        with self._new_line:
            return self._new_line.wait_for(lambda: text in self.output, timeout)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.http_url + path, timeout=5)

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGINT) -> int | None:
        """Stop the server (SIGINT, then SIGKILL after ``timeout``); return its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._pump_thread.join(timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode
