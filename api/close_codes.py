"""Every close code and reason of PROTOCOL.md, named once.

Reasons are short ASCII words: a close reason must fit in 123 bytes, and clients
switch on them (a browser's ``CloseEvent.reason``, ``ConnectionClosed.rcvd.reason``).
"""

from enum import StrEnum
from typing import NamedTuple


class Close(NamedTuple):
    code: int
    reason: str


class Reason(StrEnum):
    MISSING_TOKEN = "missing_token"
    INVALID_TOKEN = "invalid_token"
    TOKEN_EXPIRED = "token_expired"
    FORBIDDEN = "forbidden"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    INVALID_ITEM_ID = "invalid_item_id"
    # Not in PROTOCOL.md v1's table: a query parameter (``since``) of the wrong form.
    INVALID_SINCE = "invalid_since"
    # Not in PROTOCOL.md v1's table: any other malformed handshake parameter.
    INVALID_REQUEST = "invalid_request"
    RATE_LIMITED = "rate_limited"
    ITEM_CLOSED = "item_closed"
    MESSAGE_TOO_BIG = "message_too_big"
    SLOW_CONSUMER = "slow_consumer"
    # Not in PROTOCOL.md v1's table: a connection cap (per process or per user) is reached.
    TOO_MANY_CONNECTIONS = "too_many_connections"
    GOING_AWAY = "going_away"
    INTERNAL_ERROR = "internal_error"
    # PROTOCOL.md v1.1: the room's sequence was lost and restarted; resume, then reload.
    EPOCH_CHANGED = "epoch_changed"


POLICY_VIOLATION = 1008

SLOW_CONSUMER = Close(1013, Reason.SLOW_CONSUMER)
GOING_AWAY = Close(1001, Reason.GOING_AWAY)
INTERNAL_ERROR = Close(1011, Reason.INTERNAL_ERROR)
MESSAGE_TOO_BIG = Close(1009, Reason.MESSAGE_TOO_BIG)
TOKEN_EXPIRED = Close(POLICY_VIOLATION, Reason.TOKEN_EXPIRED)
FORBIDDEN = Close(POLICY_VIOLATION, Reason.FORBIDDEN)
ITEM_CLOSED = Close(POLICY_VIOLATION, Reason.ITEM_CLOSED)
RATE_LIMITED = Close(POLICY_VIOLATION, Reason.RATE_LIMITED)
TOO_MANY_CONNECTIONS = Close(1013, Reason.TOO_MANY_CONNECTIONS)
EPOCH_CHANGED = Close(1012, Reason.EPOCH_CHANGED)
