"""What a run does: how many processes and clients, which faults, how long, which
settings the servers get. Two presets: the short run (part of ``make test``) and
the full one (``make chaos``)."""

import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

Backend = Literal["redis", "postgres"]

# Settings the kit sets itself, per backend: its checks depend on them.
FORCED: dict[str, tuple[str, str, str]] = {
    "redis": ("ITEMROOMS_BACKEND", "ITEMROOMS_REDIS_URL", "ITEMROOMS_REDIS_PREFIX"),
    "postgres": ("ITEMROOMS_BACKEND", "ITEMROOMS_POSTGRES_URL", "ITEMROOMS_POSTGRES_SCHEMA"),
}
# How long a backend command may take, per backend (a pause must outlast it).
TIMEOUT_VARIABLE = {
    "redis": "ITEMROOMS_REDIS_TIMEOUT_S",
    "postgres": "ITEMROOMS_POSTGRES_TIMEOUT_S",
}
# History must hold every message of a fault's room, or "in history exactly once"
# could not be checked; a configuration asking for more keeps its own.
MIN_HISTORY = 100_000


@dataclass(frozen=True)
class Options:
    faults: tuple[str, ...]
    processes: int = 3
    publishers: int = 3
    readers: int = 4
    rate: float = 20.0  # WebSocket publishes per second, per publisher
    http_rate: float = 5.0  # HTTP publishes per second (one publisher, Idempotency-Key)
    before_s: float = 2.0  # traffic before the fault
    after_s: float = 3.0  # traffic after the fault has healed
    backend: Backend = "redis"  # what the processes share, and what most faults act on
    presence_ttl_s: float = 2.0  # unless the configuration sets ITEMROOMS_PRESENCE_TTL_S
    # The backend's command timeout (ITEMROOMS_REDIS_TIMEOUT_S or
    # ITEMROOMS_POSTGRES_TIMEOUT_S) unless the configuration sets it (None: the server's)
    command_timeout_s: float | None = None
    presence_slack_s: float = 5.0  # "within the TTL plus a few seconds"
    ready_timeout_s: float = 30.0  # /readyz back to 200 on every process
    answer_timeout_s: float = 30.0  # a publish on an open connection must be answered
    settle_timeout_s: float = 40.0  # unsettled publishes retried until then
    down_s: float = 1.0  # how long a restarted backend stays away
    pause_s: float = 6.0  # pauses and partitions; backend pauses outlast the command timeout
    itemrooms: Path = field(default_factory=lambda: Path(sys.executable).with_name("itemrooms"))
    redis_server: str = "redis-server"
    env: Mapping[str, str] = field(default_factory=dict)  # the user's ITEMROOMS_* settings
    netns: bool = False  # every process in a network namespace (needed by "partition")
    keep: bool = False  # keep the run's directory (logs, backend data) even when all passed
    verbose: bool = False

    @property
    def ttl_s(self) -> float:
        return float(self.env.get("ITEMROOMS_PRESENCE_TTL_S", self.presence_ttl_s))

    @property
    def backend_pause_s(self) -> float:
        """A backend pause must outlast the servers' command timeout, whatever it is."""
        default = 5.0 if self.command_timeout_s is None else self.command_timeout_s
        timeout = float(self.env.get(TIMEOUT_VARIABLE[self.backend], default))
        return max(self.pause_s, timeout + 1.0)

    @property
    def secret(self) -> str:
        return self.env["ITEMROOMS_JWT_SECRET"]

    def with_secret(self) -> "Options":
        """A configuration without an HS256 secret gets one of the run's own."""
        if "ITEMROOMS_JWT_SECRET" in self.env:
            return self
        return replace(self, env={**self.env, "ITEMROOMS_JWT_SECRET": secrets.token_urlsafe(48)})

    def server_env(self, url: str, namespace: str) -> dict[str, str]:
        """The environment of every ``itemrooms serve``: the user's settings, the kit's
        defaults where the user set none, and the few the kit must decide (the
        backend's URL, and a key prefix or schema of the run's own)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ITEMROOMS_")}
        env.update(
            {
                "ITEMROOMS_ENV": "production",
                "ITEMROOMS_PRESENCE_TTL_S": str(self.presence_ttl_s),
                "ITEMROOMS_RATE_LIMIT": "100000",
                "ITEMROOMS_HTTP_RATE_LIMIT": "100000",
                "ITEMROOMS_LOG_LEVEL": "info",
            }
        )
        if self.command_timeout_s is not None:
            env[TIMEOUT_VARIABLE[self.backend]] = str(self.command_timeout_s)
        env.update(self.env)
        history = int(env.get("ITEMROOMS_HISTORY_SIZE", "0"))
        env["ITEMROOMS_HISTORY_SIZE"] = str(max(history, MIN_HISTORY))
        env.update(zip(FORCED[self.backend], (self.backend, url, namespace), strict=True))
        return env

    def token_claims(self) -> dict[str, str]:
        """``iss`` and ``aud`` for tokens, when the configuration checks them."""
        claims = {}
        if "ITEMROOMS_JWT_ISSUER" in self.env:
            claims["iss"] = self.env["ITEMROOMS_JWT_ISSUER"]
        if "ITEMROOMS_JWT_AUDIENCE" in self.env:
            claims["aud"] = self.env["ITEMROOMS_JWT_AUDIENCE"]
        return claims


# Per backend: the short run's faults (part of make test) and the full run's.
# Two faults each, both the backend's own: a restart, and a stall (Redis) or terminated
# connections (PostgreSQL). A killed or paused process has integration tests on both
# backends (tests/integration/test_backend_faults.py); make chaos runs every fault.
SHORT_FAULTS: dict[str, tuple[str, ...]] = {
    "redis": ("redis-restart", "redis-debug-sleep"),
    "postgres": ("postgres-restart", "postgres-terminate"),
}
FULL_FAULTS: dict[str, tuple[str, ...]] = {
    "redis": (
        "kill9",
        "sigterm",
        "redis-restart-aof",
        "redis-restart",
        "redis-sigstop",
        "redis-client-pause",
        "redis-debug-sleep",
        "process-pause",
        "partition",
    ),
    "postgres": (
        "kill9",
        "sigterm",
        "postgres-restart",
        "postgres-restart-empty",
        "postgres-terminate",
        "postgres-sigstop",
        "process-pause",
        "partition",
    ),
}


def short_run(env: Mapping[str, str] | None = None, backend: Backend = "redis") -> Options:
    """Under half a minute on two shared cores: two processes, two faults, little traffic.

    Its backend pause outlasts a 1 s command timeout (so publishes meet
    ``outcome_unknown``) but not the 3 s presence TTL: a Redis stall past the TTL
    makes healthy processes reap each other now and then (a server bug the full run
    reports), which would make ``make test`` fail at random rather than every time."""
    return Options(
        faults=SHORT_FAULTS[backend],
        backend=backend,
        processes=2,
        publishers=2,
        readers=2,
        rate=15.0,
        http_rate=4.0,
        before_s=1.0,
        after_s=1.5,
        presence_ttl_s=3.0,
        command_timeout_s=1.0,
        pause_s=2.0,
        env=dict(env or {}),
    )


def full_run(
    env: Mapping[str, str] | None = None, netns: bool = True, backend: Backend = "redis"
) -> Options:
    faults = tuple(f for f in FULL_FAULTS[backend] if netns or f != "partition")
    return Options(faults=faults, backend=backend, env=dict(env or {}), netns=netns)


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, optional ``export``, optional quotes)."""
    env = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}:{number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env
