"""A private ``redis-server`` the kit may kill, pause, restart and empty at will.

Persistence is chosen per fault: the server starts without AOF (``--save ""``:
no snapshots either), and ``set_aof(True)`` turns AOF on at run time with
``appendfsync always``, so that a kill -9 loses nothing Redis acknowledged; a
restart then uses the same flags and directory, so it reloads the AOF. A restart
without AOF empties the directory first: Redis comes back with nothing.
"""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from chaos.polling import wait_until

START_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    def __init__(self, binary: str, workdir: Path, binds: tuple[str, ...] = ()) -> None:
        self.binary = binary
        self.port = free_port()
        self.dir = workdir / "redis-data"
        self.log = workdir / "redis.log"
        self.binds = ("127.0.0.1", *binds)
        self.aof = False
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, host: str = "127.0.0.1") -> str:
        return f"redis://{host}:{self.port}/0"

    def _command(self) -> list[str]:
        found = shutil.which(self.binary)
        if found is None:
            raise RuntimeError(f"{self.binary} not found (Debian package redis-server)")
        command = [found, "--port", str(self.port), "--bind", *self.binds]
        command += ["--protected-mode", "no", "--save", "", "--dir", str(self.dir)]
        # DEBUG SLEEP is one of the faults; Redis 7 refuses DEBUG unless enabled.
        command += ["--enable-debug-command", "local", "--logfile", str(self.log)]
        if self.aof:
            command += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            command += ["--appendonly", "no"]
        return command

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if await wait_until(self.answers, START_TIMEOUT_S) is None:
            raise RuntimeError(f"redis-server did not answer within {START_TIMEOUT_S} s")

    def client(self, timeout: float = 2.0) -> "aioredis.Redis":
        return aioredis.Redis(
            port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    async def answers(self) -> bool:
        client = self.client(0.5)
        try:
            return bool(await client.ping())
        except (RedisError, OSError):
            return False
        finally:
            await client.aclose()

    def kill(self) -> None:
        """kill -9: whatever Redis had not written to disk is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    async def restart(self, down_s: float) -> None:
        """kill -9, ``down_s`` seconds away, then start again (empty unless AOF is on)."""
        self.kill()
        if not self.aof:
            shutil.rmtree(self.dir, ignore_errors=True)
        await asyncio.sleep(down_s)  # the outage itself: a real duration, not a wait
        await self.start()

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    async def command(self, *args: str | int, timeout: float = 2.0) -> object:
        client = self.client(timeout)
        try:
            result: object = await client.execute_command(*args)  # type: ignore[no-untyped-call]
            return result
        finally:
            await client.aclose()

    async def set_aof(self, on: bool) -> None:
        """Turn AOF on (fsync on every write) or off at run time, without a restart."""
        if on == self.aof:
            return
        if on:
            await self.command("CONFIG", "SET", "appendfsync", "always")
        await self.command("CONFIG", "SET", "appendonly", "yes" if on else "no")
        self.aof = on
        if on and await wait_until(self._aof_written, START_TIMEOUT_S) is None:
            raise RuntimeError("Redis did not finish writing its AOF")

    async def _aof_written(self) -> bool:
        """Whether the rewrite that turning AOF on starts has finished."""
        client = self.client()
        try:
            info = await client.info("persistence")
        finally:
            await client.aclose()
        busy = info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled")
        return bool(info.get("aof_enabled")) and not busy
