"""The development JWT secret: generated once, kept in a git-ignored file."""

import logging
import os
import secrets
import tempfile
from pathlib import Path

log = logging.getLogger("itemrooms")

WARNING = (
    "\n" + "!" * 76 + "\n"
    "!! DEVELOPMENT MODE: tokens are signed with a generated secret kept in\n"
    "!! {path}\n"
    "!! It is for development on your own machine only. In production set\n"
    "!! ITEMROOMS_JWT_SECRET and leave ITEMROOMS_ENV unset.\n" + "!" * 76
)


def load_or_create_dev_secret(path: Path) -> str:
    """Read the secret, creating it on first use.

    The file is written under a temporary name and hard-linked into place, so it
    never exists half-written and several workers starting together agree on one
    secret; mode 0600 keeps other local users from minting tokens.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".itemrooms-secret-")
        try:
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_urlsafe(48) + "\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process won the race; use its secret
        finally:
            os.unlink(tmp)
    secret = path.read_text().strip()
    if not secret:
        raise ValueError(f"development secret file {path} is empty; delete it to regenerate")
    return secret


def warn_development(path: Path) -> None:
    log.warning(WARNING.format(path=path.resolve()))
