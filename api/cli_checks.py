"""``itemrooms check`` and ``itemrooms verify-token``: answers before a deployment, and
while hunting a wave of refused tokens."""

import argparse
import os
import sys
import time
from datetime import UTC, datetime

from itemrooms.api.config_report import effective, unknown_variables
from itemrooms.api.settings import Settings

REFUSED = 1  # exit status: the token would be refused (2 is a usage or settings error)


def check(args: argparse.Namespace) -> int:
    """Settings valid, backend reachable: exit 0, else one line per problem and 1."""
    from itemrooms.api.cli import backend_problem

    settings = Settings()  # a ValidationError is reported by main(), exit 2
    problems = unknown_variables(os.environ)
    problem = backend_problem(settings)
    if problem:
        problems.append(problem)
    for name, value in effective(settings).items():
        print(f"{name}={value}")
    for problem in problems:
        print(f"itemrooms: problem: {problem}", file=sys.stderr)
    if not problems:
        print(f"ok: settings valid, {settings.backend} backend reachable", file=sys.stderr)
    return 1 if problems else 0


def verify_token(args: argparse.Namespace) -> int:
    """Why this server would refuse a token, or what it allows (exit 0, else 1)."""
    from itemrooms.api.embedding import make_verifier
    from itemrooms.auth.permissions import can_join, can_publish
    from itemrooms.auth.tokens import TokenError

    settings = Settings()
    try:
        claims = make_verifier(settings).verify(args.token.strip())
    except TokenError as exc:
        print(f"refused: 1008 {exc.reason}: {exc}")
        return REFUSED
    expires = datetime.fromtimestamp(claims.exp, UTC).isoformat(timespec="seconds")
    left = claims.exp - time.time()
    print(f"valid: sub {claims.sub!r}, expires {expires} (in {left / 60:.0f} min)")
    print(f"scope: {' '.join(sorted(claims.scope)) or '(none)'}")
    print(f"items: {', '.join(claims.items) if claims.items is not None else 'any'}")
    if args.item is None:
        return 0
    if not can_join(claims, args.item):
        print(
            f"item {args.item!r}: refused: 1008 forbidden (needs items:read and the item in items)"
        )
        return REFUSED
    publish = "may publish" if can_publish(claims, args.item) else "may not publish"
    print(f"item {args.item!r}: may join, {publish}")
    return 0
