"""The one place every setting comes from: ``ITEMROOMS_*`` environment variables.

PROTOCOL.md's operating contract names the variables; the extra ones below the
protocol's list are ours and have safe defaults.
"""

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from itemrooms.api.dev_secret import load_or_create_dev_secret
from itemrooms.api.rate_limit import REFRESH_COST

# Below this many bytes an HS256 secret can be brute-forced offline from one token.
MIN_HS_SECRET_BYTES = 32

CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ITEMROOMS_", extra="ignore", frozen=True)

    # --- PROTOCOL.md's operating contract ---
    jwt_secret: SecretStr | None = None
    jwt_algorithms: CommaList = ["HS256"]
    jwt_public_key: str | None = None
    jwks_url: str | None = None
    # An unknown kid refetches the JWKS at most this often; keys are refreshed this often.
    jwks_min_refetch_s: float = Field(60.0, ge=1.0)
    jwks_max_age_s: float = Field(600.0, ge=1.0)
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_s: int = Field(30, ge=0, le=600)
    allowed_origins: CommaList = []
    backend: Literal["memory", "redis", "postgres"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # ITEMROOMS_BACKEND=postgres: the database, and the schema its tables live in.
    postgres_url: str = "postgresql://127.0.0.1:5432/postgres"
    postgres_schema: str = Field("itemrooms", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")
    history_size: int = Field(1000, ge=0)
    max_message_bytes: int = Field(65536, ge=128)
    send_queue: int = Field(1024, ge=1)
    rate_limit: float = Field(50, gt=0)
    # PROTOCOL.md v1.1: a publish id is applied once within this many seconds.
    publish_dedup_s: float = Field(300.0, gt=0)

    # --- ours ---
    # "development" allows a generated JWT secret and short secrets; anything
    # facing users must run as "production" (the default).
    env: Literal["development", "production"] = "production"
    dev_secret_file: Path = Path(".itemrooms-dev-secret")
    # Longest token we hand to the JWT library; real tokens are well under 2 KiB.
    max_token_bytes: int = Field(8192, ge=256)
    # A room without messages for this long forgets its history and seq.
    history_ttl_s: float = Field(7 * 86400, gt=0)
    # Namespace of every Redis key and channel, so deployments can share one Redis.
    redis_prefix: str = "itemrooms:"
    # How long a Redis command may take before its outcome counts as unknown (a publish
    # is then answered ``outcome_unknown``, never retried by the server).
    redis_timeout_s: float = Field(5.0, gt=0)
    # The same for PostgreSQL: a statement (or a connection attempt) without an answer
    # by then counts as failed; a publish then is ``outcome_unknown``.
    postgres_timeout_s: float = Field(5.0, gt=0)
    # Members of a process that stopped heart-beating disappear within about this long.
    presence_ttl_s: float = Field(15.0, ge=1.0)
    # Presence changes of a room are sent at most once per this interval (the first after
    # a quiet interval at once): a storm of N joins costs each member a frame per
    # interval, not N.
    presence_interval_ms: int = Field(500, ge=0, le=60_000)
    # Rooms with more users than this are in large-room mode: welcomes list at most this
    # many, and presence frames carry counts instead of each join and leave.
    presence_list_max: int = Field(100, ge=0, le=10_000)
    # In large-room mode, a user's leave counts only after this long without a
    # connection, so a reload or a flaky network does not count as leave and join.
    presence_grace_s: float = Field(5.0, ge=0, le=3600)
    # Publishes (and binary frames) per second per connection may burst to this many.
    rate_burst: float | None = Field(None, gt=0)
    # Every frame a client sends, of any kind (pings, refreshes, malformed ones too),
    # per second per connection; default twice ITEMROOMS_RATE_LIMIT, at least 100. A
    # refresh counts as REFRESH_COST frames (a signature check each).
    frame_rate_limit: float | None = Field(None, gt=0)
    # HTTP publishes per second per user (sub) per process, bursting to one second's
    # worth: raise it for a backend's service account that publishes for every item.
    http_rate_limit: float = Field(200, gt=0)
    # How long POST /kick refuses the kicked user's joins unless the call says (ban_s).
    kick_ban_s: float = Field(60.0, ge=0, le=30 * 86400)
    # Open connections per process, and per user (sub) per process.
    max_connections: int = Field(10_000, ge=1)
    max_connections_per_user: int = Field(100, ge=1)
    # Deepest nesting of a published ``data`` value.
    max_json_depth: int = Field(32, ge=1, le=512)
    # uvicorn's log level; "debug" and "trace" still never log credentials.
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"
    # One line per HTTP request and per WebSocket handshake (api/access_log.py).
    access_log: bool = False
    # Addresses of the reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are
    # believed (uvicorn's proxy headers), comma-separated, "*" for any; unset: none.
    # Then logs, rejections and same-origin checks see the client, not the proxy.
    forwarded_allow_ips: str | None = None
    # FastAPI's built-in OpenTelemetry spans, metrics and logs, for an app that
    # configures an OpenTelemetry SDK (off: checked on every handshake otherwise).
    opentelemetry: bool = False
    # Protocol-level pings: a peer that does not answer within the timeout is dropped.
    ping_interval_s: float = Field(20.0, gt=0)
    ping_timeout_s: float = Field(20.0, gt=0)
    # Seconds uvicorn waits for open connections at shutdown before cutting them.
    shutdown_timeout_s: int = Field(5, ge=1)

    @field_validator("jwt_algorithms", "allowed_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("jwt_algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        allowed = {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512"}
        bad = [alg for alg in value if alg not in allowed]
        if bad or not value:
            raise ValueError(f"unsupported JWT algorithm(s) {bad or value}; use {sorted(allowed)}")
        return value

    @model_validator(mode="after")
    def _public_key_source(self) -> Self:
        asymmetric = [a for a in self.jwt_algorithms if not a.startswith("HS")]
        if asymmetric and not (self.jwt_public_key or self.jwks_url):
            raise ValueError(
                f"{', '.join(asymmetric)} need ITEMROOMS_JWT_PUBLIC_KEY or ITEMROOMS_JWKS_URL"
            )
        return self

    @model_validator(mode="after")
    def _secret_rules(self) -> Self:
        uses_hmac = any(alg.startswith("HS") for alg in self.jwt_algorithms)
        if not uses_hmac:
            return self
        if self.jwt_secret is None:
            if self.env != "development":
                raise ValueError(
                    "ITEMROOMS_JWT_SECRET is not set: set it to a random string of at least "
                    f"{MIN_HS_SECRET_BYTES} bytes, or set ITEMROOMS_ENV=development to use a "
                    "generated development secret"
                )
            secret = load_or_create_dev_secret(self.dev_secret_file)
            object.__setattr__(self, "jwt_secret", SecretStr(secret))
            return self
        size = len(self.jwt_secret.get_secret_value().encode())
        if size == 0:
            raise ValueError("ITEMROOMS_JWT_SECRET is empty")
        if size < MIN_HS_SECRET_BYTES and self.env != "development":
            raise ValueError(
                f"ITEMROOMS_JWT_SECRET has {size} bytes; outside development it needs at least "
                f"{MIN_HS_SECRET_BYTES}"
            )
        return self

    @model_validator(mode="after")
    def _frame_budget(self) -> Self:
        if self.frame_rate_limit is None:
            object.__setattr__(self, "frame_rate_limit", max(100.0, 2 * self.rate_limit))
        elif self.frame_rate_limit < max(self.rate_limit, REFRESH_COST):
            raise ValueError(
                "ITEMROOMS_FRAME_RATE_LIMIT counts every frame, publishes included, and a "
                f"refresh as {REFRESH_COST}: it cannot be below ITEMROOMS_RATE_LIMIT "
                f"({self.rate_limit}) or {REFRESH_COST}"
            )
        return self

    @property
    def frames_per_s(self) -> float:
        assert self.frame_rate_limit is not None, "validated: _frame_budget sets it"
        return self.frame_rate_limit

    def hmac_secret(self) -> str:
        assert self.jwt_secret is not None, "validated: HS algorithms always have a secret"
        return self.jwt_secret.get_secret_value()


@lru_cache
def get_settings() -> Settings:
    return Settings()
