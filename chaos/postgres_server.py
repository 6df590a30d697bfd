"""A private PostgreSQL the kit may crash, empty, pause and cut connections of at will
(the test suite uses it too: tests/conftest.py's ``private_postgres``).

``initdb`` makes a cluster under the run's directory (owned by the ``postgres`` user
when the kit runs as root, since PostgreSQL refuses to run as root). ``crash()`` is an
immediate shutdown (SIGQUIT: no checkpoint, crash recovery at the next start, nothing
committed is lost; unlogged tables come back empty); ``restart(empty=True)`` makes the
cluster anew first, as a database restored empty or a failover to a blank replica
would be. ``pause()`` stops the postmaster and every backend (each in a session of its
own, found by its parent). Without fsync: a process crash loses nothing committed (the
page cache keeps it), and fsync would only slow the runs down.
"""

import asyncio
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

import asyncpg

from chaos.polling import wait_until

START_TIMEOUT_S = 20.0
POSTGRES_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def binary(name: str) -> str:
    """A PostgreSQL program: on PATH, or in Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found is not None:
        return found
    for directory in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (directory / name).exists():
            return str(directory / name)
    raise RuntimeError(f"{name} not found (Debian package postgresql)")


class PrivatePostgres:
    def __init__(self, workdir: Path, binds: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.dir = workdir / "postgres"
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.binds = ("127.0.0.1", *binds)
        self.user = "postgres" if os.geteuid() == 0 else None
        self.process: subprocess.Popen[bytes] | None = None
        self.dir.mkdir(parents=True)
        if self.user is not None:  # the server's user must reach its directory
            workdir.chmod(workdir.stat().st_mode | 0o711)
            os.chown(self.dir, pwd.getpwnam(self.user).pw_uid, -1)
        self._initdb()

    def url(self, host: str = "127.0.0.1") -> str:
        return f"postgresql://postgres@{host}:{self.port}/postgres"

    def _initdb(self) -> None:
        command = [binary("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"]
        command += ["--no-sync", "-E", "UTF8", "--locale", "C"]
        subprocess.run(command, user=self.user, check=True, capture_output=True, timeout=60)
        if len(self.binds) > 1:  # the namespaces' links (chaos/netns.py)
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write("host all all 10.0.0.0/8 trust\n")

    async def start(self) -> None:
        command = [binary("postgres"), "-D", str(self.data), "-p", str(self.port)]
        command += ["-k", str(self.dir), "-c", f"listen_addresses={','.join(self.binds)}"]
        command += ["-c", "fsync=off", "-c", "shared_buffers=16MB"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, user=self.user, stdout=log, stderr=log)
        if await wait_until(self.answers, START_TIMEOUT_S) is None:
            raise RuntimeError(f"PostgreSQL did not start within {START_TIMEOUT_S} s: {self.log}")

    async def answers(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"PostgreSQL exited; see {self.log}")
        try:
            conn = await asyncpg.connect(self.url(), timeout=1)
        except POSTGRES_ERRORS:
            return False
        await conn.close()
        return True

    def crash(self) -> None:
        """Immediate shutdown: every connection cut, recovery from WAL at the next start."""
        if self.process is not None and self.process.poll() is None:
            self.resume()  # a paused server cannot exit
            self.process.send_signal(signal.SIGQUIT)
            self.process.wait(15)
        self.process = None

    def wipe(self) -> None:
        """Crash, then a new empty cluster in its place: every table is gone."""
        self.crash()
        shutil.rmtree(self.data)
        self._initdb()

    async def restart(self, down_s: float, empty: bool = False) -> None:
        """Crash, ``down_s`` seconds away, then start again (empty: a new cluster)."""
        started = time.monotonic()
        if empty:
            await asyncio.to_thread(self.wipe)
        else:
            self.crash()
        await asyncio.sleep(max(0.0, down_s - (time.monotonic() - started)))  # the outage
        await self.start()

    def pause(self) -> None:
        """SIGSTOP of the postmaster and every backend: nobody gets an answer."""
        for pid in self._pids():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self._pids():
            os.kill(pid, signal.SIGCONT)

    def _pids(self) -> list[int]:
        assert self.process is not None
        pids = [self.process.pid]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited meanwhile
            if int(fields[1]) == self.process.pid:
                pids.append(int(stat.parent.name))
        return pids

    async def terminate(self, application: str) -> int:
        return await terminate_backends(self.url(), application)

    def kill(self) -> None:
        """End of the run (the data stays in the run's directory)."""
        self.crash()


async def terminate_backends(url: str, application: str) -> int:
    """``pg_terminate_backend`` of every connection whose application_name is LIKE
    ``application`` (itemrooms names its own ``itemrooms-<pid>-<node>``): how many."""
    conn = await asyncpg.connect(url, timeout=5)
    try:
        terminated: int = await conn.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name LIKE $1 AND pid <> pg_backend_pid()",
            application,
        )
    finally:
        await conn.close()
    return terminated
