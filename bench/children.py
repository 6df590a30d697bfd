"""Child processes pinned to one core, with bounded waits on what they print.

Why a thread per child reads its output: a server that logs a lot (one line per
handshake) must never block on a full pipe, and every wait here needs a
timeout, which ``queue.Queue.get`` gives for free.
"""

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench.system import process_cpu_s, process_tree_cpu_s


class BenchError(RuntimeError):
    """A run that could not be measured (a child failed, or a wait timed out)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(cpu: int | None, argv: Sequence[str]) -> list[str]:
    """``argv`` under ``taskset -c cpu`` (taskset execs, so the pid stays the child's)."""
    if cpu is None:
        return list(argv)
    if shutil.which("taskset") is None:
        raise BenchError("taskset not found (util-linux); run with --no-pin")
    return ["taskset", "-c", str(cpu), *argv]


class Child:
    """A subprocess whose merged stdout/stderr lines are kept and can be waited for."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cpu: int | None,
        env: Mapping[str, str],
        cwd: str,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.process = subprocess.Popen(
            pinned(cpu, argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(env),
            cwd=cwd,
            user=user,
        )
        self._pump = threading.Thread(target=self._read, name=f"pump {name}", daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_s(self) -> float:
        return process_cpu_s(self.pid) or 0.0

    def tree_cpu_s(self) -> float:
        """Its CPU and its descendants' (PostgreSQL's backends are processes of their own)."""
        return process_tree_cpu_s(self.pid)

    def output(self, last: int = 40) -> str:
        return "".join(self.lines[-last:])

    def wait_line(self, match: Callable[[str], bool], timeout: float, what: str) -> str:
        """The next output line that ``match``es; BenchError on timeout or exit."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.name}: no {what} within {timeout:.0f}s\n{self.output()}")
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self._queue.put(None)  # stay at end of output for later waits
                raise BenchError(f"{self.name}: exited before {what}\n{self.output()}")
            if match(line):
                return line

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The next JSON event line named ``event``; an ``error`` event raises."""

        def is_event(line: str) -> bool:
            return line.startswith('{"event": ')

        while True:
            frame: dict[str, Any] = json.loads(self.wait_line(is_event, timeout, event))
            if frame["event"] == "error":
                raise BenchError(f"{self.name}: {frame.get('stage')}: {frame.get('detail')}")
            if frame["event"] == event:
                return frame

    def send(self, command: str) -> None:
        """Write one command line; a child that is gone is not an error here."""
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signal, wait up to ``timeout``, then kill; return the exit code."""
        if self.process.poll() is None:
            try:
                self.process.send_signal(sig)
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._pump.join(timeout)
        for stream in (self.process.stdin, self.process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        return self.process.returncode

    def close_gently(self, timeout: float) -> None:
        """Ask a load generator to quit, give it ``timeout``, then stop it."""
        self.send("quit")
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self.stop()


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """Our environment plus ``extra``, without proxy settings (all traffic is loopback)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(extra)
    return env
