"""A private PostgreSQL on a free port, for tests that restart, empty or pause it.

``initdb`` makes a cluster in a directory of its own (owned by the ``postgres`` user
when the tests run as root, since PostgreSQL refuses to run as root); ``start()``
runs the server, and ``pause()`` stops the postmaster and every backend (each
in a session of its own, found by its parent). ``crash()`` is an immediate shutdown (SIGQUIT: no
checkpoint, crash recovery at the next start, nothing committed is lost);
``wipe()`` makes the cluster anew, as a database restored empty would be.
"""

import asyncio
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg

from tests.support.server import free_port

START_TIMEOUT_S = 20.0


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        for version in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
            if (version / name).exists():
                return str(version / name)
    assert found, f"{name} is not installed (Debian package postgresql)"
    return found


class PrivatePostgres:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="itemrooms-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.user = "postgres" if os.geteuid() == 0 else None
        self.process: subprocess.Popen[bytes] | None = None
        if self.user is not None:
            os.chown(self.dir, pwd.getpwnam(self.user).pw_uid, -1)
        self._initdb()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _initdb(self) -> None:
        command = [_binary("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"]
        command += ["--no-sync", "-E", "UTF8", "--locale", "C"]
        subprocess.run(command, user=self.user, check=True, capture_output=True, timeout=60)

    def start(self) -> "PrivatePostgres":
        command = [_binary("postgres"), "-D", str(self.data), "-p", str(self.port)]
        command += ["-k", str(self.dir), "-c", "listen_addresses=127.0.0.1"]
        # A process crash loses nothing committed without fsync (the page cache keeps
        # it); fsync would only slow the tests down.
        command += ["-c", "fsync=off", "-c", "shared_buffers=16MB"]
        log = self.log.open("ab")
        self.process = subprocess.Popen(command, user=self.user, stdout=log, stderr=log)
        log.close()
        asyncio.run(self._until_answering())
        return self

    async def _until_answering(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # bounded: PostgreSQL has no readiness signal but answering
            assert self.process is not None and self.process.poll() is None, self.log.read_text()
            try:
                conn = await asyncpg.connect(self.url, timeout=1)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                assert time.monotonic() < deadline, f"PostgreSQL did not start: {self.log}"
                await asyncio.sleep(0.05)
                continue
            await conn.close()
            return

    def crash(self) -> None:
        """Immediate shutdown: every connection cut, recovery from WAL at the next start."""
        self._signal(signal.SIGQUIT)

    def wipe(self) -> None:
        """Stop, then a new empty cluster in the same place: everything is gone."""
        self._signal(signal.SIGQUIT)
        shutil.rmtree(self.data)
        self._initdb()

    def pause(self) -> None:
        """SIGSTOP of the postmaster and every backend: nobody gets an answer."""
        for pid in self._pids():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self._pids():
            os.kill(pid, signal.SIGCONT)

    def _pids(self) -> list[int]:
        """The postmaster and its children (each in a session of its own)."""
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

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()  # a paused server cannot exit
            self.process.send_signal(sig)
            self.process.wait(15)
        self.process = None

    def stop(self) -> None:
        self._signal(signal.SIGQUIT)
        shutil.rmtree(self.dir, ignore_errors=True)


async def terminate_backends(url: str, application: str) -> int:
    """``pg_terminate_backend`` for every connection whose application_name is LIKE
    ``application`` (itemrooms names its connections ``itemrooms-<pid>-<node>``): how
    many were terminated."""
    conn = await asyncpg.connect(url)
    try:
        terminated: int = await conn.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name LIKE $1 AND pid <> pg_backend_pid()",
            application,
        )
    finally:
        await conn.close()
    return terminated
