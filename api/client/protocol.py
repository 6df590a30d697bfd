"""What this client takes from docs/PROTOCOL.md, named once so that the connection loop,
the publishes and the errors agree: the frame type, the default timeout, the close codes the
client acts on, the close reasons that no reconnect can fix, and the resume query.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

Frame = dict[str, Any]

DEFAULT_TIMEOUT: Final = 10.0
ABNORMAL_CLOSURE: Final = 1006  # no close frame was received (RFC 6455)
MESSAGE_TOO_BIG: Final = 1009
SERVICE_RESTART: Final = 1012  # epoch_changed: the room is there, with a new sequence
# Close reasons after which reconnecting cannot help (token_expired too, for a fixed token).
FATAL_REASONS: Final = frozenset(
    {
        "missing_token",
        "invalid_token",
        "forbidden",
        "origin_not_allowed",
        "invalid_item_id",
        "invalid_since",
        "invalid_request",
        "item_closed",
    }
)
# Error codes that say only "this attempt was not published": after an attempt whose


def _with_resume(url: str, since: int | None, epoch: str | None) -> str:
    """``url`` with ``since`` (and, with it, ``epoch``) in its query, replacing any."""
    if since is None:
        return url
    parts = urlsplit(url)
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k not in ("since", "epoch")
    ]
    query.append(("since", str(since)))
    if epoch is not None:
        query.append(("epoch", epoch))
    return urlunsplit(parts._replace(query=urlencode(query)))
