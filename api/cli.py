"""The itemrooms command: serve, token, check, verify-token, openapi."""

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from pydantic import ValidationError

from itemrooms.api.cli_checks import check, verify_token
from itemrooms.api.config_report import redact_url
from itemrooms.api.settings import Settings
from itemrooms.api.version import VERSION

DEMO_ITEM = "demo"


def fail(message: str) -> int:
    print(f"itemrooms: error: {message}", file=sys.stderr)
    return 2


def settings_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        field = ".".join(str(p) for p in error["loc"])
        parts.append(f"ITEMROOMS_{field.upper()}: {message}" if field else message)
    return "; ".join(parts)


def demo_links(settings: Settings, host: str, port: int) -> list[str]:
    from itemrooms.auth.tokens import mint_token

    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    links = []
    for user in ("alice", "bob"):
        token = mint_token(settings.hmac_secret(), user, ttl_s=3600)
        # The token travels in the fragment, which browsers never send to the server.
        links.append(f"http://{shown_host}:{port}/#item={DEMO_ITEM}&token={quote(token)}")
    return links


def backend_problem(settings: Settings) -> str | None:
    """Why the configured backend cannot start, in one line; None when it can."""
    if settings.backend == "redis":
        return redis_problem(settings.redis_url)
    if settings.backend == "postgres":
        return postgres_problem(settings.postgres_url, settings.postgres_schema)
    return None


def postgres_problem(url: str, schema: str) -> str | None:
    """Unreachable, or a role that can neither create the schema nor use it."""
    import asyncio

    try:
        import asyncpg
    except ImportError:
        return "ITEMROOMS_BACKEND=postgres needs asyncpg: pip install 'itemrooms[postgres]'"
    from itemrooms.api.hub.backends.postgres_schema import version_problem

    async def ask() -> str | None:
        where = f"PostgreSQL at {redact_url(url)} (ITEMROOMS_POSTGRES_URL)"
        try:
            conn = await asyncpg.connect(url, timeout=3)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            return f"cannot reach {where}: {exc or type(exc).__name__}"
        except ValueError as exc:  # not a URL asyncpg understands
            return f"{where} is not a PostgreSQL URL: {exc}"
        try:
            may = await conn.fetchval(
                "SELECT CASE WHEN to_regnamespace($1) IS NULL "
                "THEN has_database_privilege(current_database(), 'CREATE') "
                "ELSE has_schema_privilege($1, 'CREATE') AND has_schema_privilege($1, 'USAGE') "
                "END",
                schema,
            )
            if not may:
                return (
                    f"the role of {where} may not create or use schema {schema!r} "
                    "(ITEMROOMS_POSTGRES_SCHEMA): grant it CREATE on the database or the schema"
                )
            return await version_problem(conn, schema)
        finally:
            await conn.close()

    return asyncio.run(ask())


def redis_problem(url: str) -> str | None:
    """Why the Redis backend cannot start, in one line; None when Redis answers."""
    try:
        import redis
    except ImportError:
        return "ITEMROOMS_BACKEND=redis needs redis-py: pip install 'itemrooms[redis]'"
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"cannot reach Redis at {redact_url(url)} (ITEMROOMS_REDIS_URL): {exc}"
    finally:
        client.close()
    return None


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from itemrooms.api.server import uvicorn_options

    try:  # uvicorn would import it only at startup, and print a traceback
        import itemrooms.api.http_protocol  # noqa: F401
        import itemrooms.api.ws_protocol  # noqa: F401
    except ImportError as exc:
        return fail(str(exc))
    settings = Settings()
    if args.workers > 1 and settings.backend == "memory":
        return fail(
            "--workers > 1 needs ITEMROOMS_BACKEND=redis or postgres: with the memory backend each "
            "worker would hold its own copy of every room and members would not see each other"
        )
    problem = backend_problem(settings)
    if problem:
        return fail(problem)
    problem = host_problem(args.host, args.port)
    if problem:
        return fail(problem)
    if settings.env == "development" and any(a.startswith("HS") for a in settings.jwt_algorithms):
        alice, bob = demo_links(settings, args.host, args.port)
        print(
            f"\n  itemrooms demo (development tokens, valid for one hour):\n"
            f"    alice: {alice}\n    bob:   {bob}\n",
            flush=True,
        )
    options = uvicorn_options(settings, args.host, args.port, args.workers)
    with shared_metrics(args.workers):
        uvicorn.run("itemrooms.api.app:create_app", **options)
    return 0


@contextmanager
def shared_metrics(workers: int) -> Iterator[None]:
    """Workers share one port, so one scrape must sum them all (api/metrics.py): a fresh
    PROMETHEUS_MULTIPROC_DIR for this run, unless the operator gave one."""
    from itemrooms.api.metrics import MULTIPROC_DIR

    if workers == 1 or os.environ.get(MULTIPROC_DIR):
        yield
        return
    directory = tempfile.mkdtemp(prefix="itemrooms-metrics-")
    os.environ[MULTIPROC_DIR] = directory
    try:
        yield
    finally:
        del os.environ[MULTIPROC_DIR]
        shutil.rmtree(directory, ignore_errors=True)


def token(args: argparse.Namespace) -> int:
    from itemrooms.auth.tokens import mint_token

    settings = Settings()
    if "HS256" not in settings.jwt_algorithms:
        return fail("itemrooms token signs with HS256, not in ITEMROOMS_JWT_ALGORITHMS")
    items = [i.strip() for i in args.items.split(",") if i.strip()] if args.items else None
    print(
        mint_token(
            settings.hmac_secret(),
            args.sub,
            scope=args.scope.split(),
            items=items,
            ttl_s=args.ttl,
            name=args.name,
        )
    )
    return 0


def openapi(args: argparse.Namespace) -> int:
    from itemrooms.api.specs import write_specs

    for path in write_specs(Path(args.out)):
        print(f"wrote {path}")
    return 0


def port_number(text: str) -> int:
    port = int(text) if text.isdigit() else -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return port


def positive_int(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def host_problem(host: str, port: int) -> str | None:
    """Why the server cannot listen on ``host``, in one line; None when it can."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        return f"--host {host!r} is not an address of this machine: {exc}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="itemrooms",
        description="An authenticated WebSocket room for every item of your application. "
        "Settings come from ITEMROOMS_* environment variables (see the README).",
    )
    parser.add_argument("--version", action="version", version=f"itemrooms {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("serve", help="run the server (uvicorn underneath)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=port_number, default=8000)
    p.add_argument("--workers", type=positive_int, default=1)
    p.set_defaults(run=serve)

    p = commands.add_parser("token", help="print a JWT signed with the configured HS256 secret")
    p.add_argument("--sub", required=True, help="the user")
    p.add_argument("--scope", default="items:read items:write")
    p.add_argument("--items", default=None, help="comma list of item ids or globs, e.g. 42,sku-*")
    p.add_argument("--ttl", type=positive_int, default=3600, help="seconds until it expires")
    p.add_argument("--name", default=None, help="display name")
    p.set_defaults(run=token)

    p = commands.add_parser(
        "check",
        help="validate the settings, reach the backend, print the configuration in force "
        "(secrets redacted); exit 1 on a problem",
    )
    p.set_defaults(run=check)

    p = commands.add_parser(
        "verify-token",
        help="say why this configuration would refuse a token, or what it allows; exit 1 "
        "if refused",
    )
    p.add_argument("token", help="the JWT")
    p.add_argument("--item", default=None, help="also say whether it may join this item")
    p.set_defaults(run=verify_token)

    p = commands.add_parser(
        "openapi", help="(re)write openapi/openapi.json and openapi/asyncapi.yaml"
    )
    p.add_argument("--out", default="openapi")
    p.set_defaults(run=openapi)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ValidationError as exc:
        return fail(settings_error(exc))
    return code


if __name__ == "__main__":
    sys.exit(main())
