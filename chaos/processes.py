"""``itemrooms serve`` processes the kit may kill, pause, drain and restart.

Each one is the installed console script (next to this Python, or ``--itemrooms``),
listening on its own port, optionally inside a network namespace (chaos/netns.py)
so that its link to Redis can be cut. Output goes to a log file in the run's
directory: that is the evidence to read when a check fails.
"""

import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from chaos.polling import wait_until

START_TIMEOUT_S = 30.0


class ServerProcess:
    def __init__(
        self,
        index: int,
        itemrooms: Path,
        env: Mapping[str, str],
        port: int,
        workdir: Path,
        host: str = "127.0.0.1",
        netns: str | None = None,
    ) -> None:
        self.index = index
        self.itemrooms = itemrooms
        self.env = dict(env)
        self.port = port
        self.host = host  # where the kit reaches it
        self.netns = netns
        self.log = workdir / f"itemrooms-{index}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def name(self) -> str:
        return f"p{self.index}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ws_url(self, item_id: str, query: str = "") -> str:
        return f"ws://{self.host}:{self.port}/items/{item_id}/ws" + (f"?{query}" if query else "")

    def _command(self) -> list[str]:
        listen = "0.0.0.0" if self.netns else self.host
        command = [str(self.itemrooms), "serve", "--host", listen, "--port", str(self.port)]
        # ``ip netns exec`` execs the server in place: the pid stays the server's.
        return ["ip", "netns", "exec", self.netns, *command] if self.netns else command

    async def start(self) -> None:
        self.starts += 1
        with self.log.open("a") as log:
            log.write(f"{_now()} --- start {self.starts}\n")
        self.process = subprocess.Popen(
            self._command(), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        threading.Thread(target=self._copy_output, args=(self.process,), daemon=True).start()
        if await wait_until(self._healthy, START_TIMEOUT_S, poll=0.1) is None:
            raise RuntimeError(f"{self.name} did not start; see {self.log}")

    async def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited at start ({self.process.returncode}); see {self.log}"
            )
        try:
            async with httpx.AsyncClient(timeout=1.0) as client:
                return (await client.get(self.http_url + "/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    def _copy_output(self, process: "subprocess.Popen[bytes]") -> None:
        """The server's output into its log, each line stamped with the wall clock (the
        logs of several processes and the kit's report are read side by side)."""
        assert process.stdout is not None
        with self.log.open("a") as log:
            for raw in process.stdout:
                log.write(f"{_now()} {raw.decode(errors='replace')}")
                log.flush()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    def kill(self) -> None:
        """kill -9: no shutdown, no leave events; the others must reap its members."""
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)

    async def drain(self, timeout: float) -> int | None:
        """SIGTERM and wait (bounded) for the exit; its exit code, None if it hung."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        if await wait_until(self._exited, timeout, poll=0.05) is None:
            self.kill()
            return None
        return self.process.returncode

    async def _exited(self) -> bool:
        return self.process is None or self.process.poll() is not None

    def stop(self) -> None:
        """End of the run: SIGCONT (it may be paused), SIGTERM, then kill -9 if needed."""
        if not self.running:
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def _now() -> str:
    return time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"
