"""What an operator needs to see of the configuration: mistakes named, and what is in force.

A misspelt variable (``ITEMROOMS_BAKEND=redis``) is otherwise ignored without a word and
the server starts on its default; and nothing said which backend and limits a process
runs with. Secrets never appear: the JWT secret is reported by length, passwords in
URLs as ``***``.
"""

import difflib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from itemrooms.api.settings import Settings

PREFIX = "ITEMROOMS_"
SECRET_FIELDS = frozenset({"jwt_secret"})
URL_FIELDS = frozenset({"redis_url", "jwks_url", "postgres_url"})


def setting_names() -> list[str]:
    return [PREFIX + name.upper() for name in Settings.model_fields]


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One sentence per ``ITEMROOMS_*`` variable that is no setting, with a likely fix."""
    known = setting_names()
    problems = []
    for name in sorted(environ):
        if not name.upper().startswith(PREFIX) or name.upper() in known:
            continue
        close = difflib.get_close_matches(name.upper(), known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        problems.append(f"{name} is not an itemrooms setting{hint}: it is ignored")
    return problems


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def shown(name: str, value: Any) -> str:
    if value is None:
        return "(not set)"
    if name in SECRET_FIELDS:
        return f"(set, {len(value.get_secret_value().encode())} bytes)"
    if name == "jwt_public_key":
        return "(set)"
    if name in URL_FIELDS:
        return redact_url(str(value))
    if isinstance(value, list):
        return ",".join(value) or "(none)"
    return str(value)


def effective(settings: Settings) -> dict[str, str]:
    """Every setting as in force, by its variable name, secrets redacted."""
    return {
        PREFIX + name.upper(): shown(name, getattr(settings, name))
        for name in Settings.model_fields
    }


def startup_line(settings: Settings, version: str) -> str:
    backend: str = settings.backend
    if backend == "redis":
        backend += f" at {redact_url(settings.redis_url)} (prefix {settings.redis_prefix!r})"
    elif backend == "postgres":
        backend += f" at {redact_url(settings.postgres_url)} (schema {settings.postgres_schema})"
    origins = ",".join(settings.allowed_origins) or "the server's own origin"
    return (
        f"itemrooms {version}: backend {backend}; origins {origins}; env {settings.env}; "
        f"limits: {settings.max_message_bytes} bytes a frame, {settings.rate_limit:g} "
        f"publishes and {settings.frames_per_s:g} frames a second per connection, "
        f"{settings.max_connections} connections ({settings.max_connections_per_user} per "
        f"user), {settings.http_rate_limit:g} HTTP publishes a second per user, history "
        f"{settings.history_size} messages"
    )
