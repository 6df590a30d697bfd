"""Keep credentials out of the logs, at every log level.

uvicorn logs each handshake with its query string (``?token=``); at ``debug`` the
websockets library logs every request header (``Authorization``, ``Cookie``,
``Sec-WebSocket-Protocol: bearer.<jwt>``); at ``trace`` uvicorn logs the whole ASGI
scope. This filter formats each record and rewrites credentials before any handler
sees it: anything shaped like a JWT, and the values of credential headers, cookies
and query parameters.
"""

import logging
import re

_RULES = [
    # Any JWT, wherever it appears (header, subprotocol, query, cookie, scope dump).
    (re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*"), "[redacted-jwt]"),
    # Header lines: "< authorization: Bearer …", "cookie: …".
    (re.compile(r"(?i)\b((?:authorization|cookie|set-cookie)\s*:\s*)[^\r\n]*"), r"\1[redacted]"),
    # Header tuples in a scope dump: (b'authorization', b'…').
    (re.compile(r"(?i)(b?['\"](?:authorization|cookie)['\"],\s*b?['\"])[^'\"]*"), r"\1[redacted]"),
    # The subprotocol credential.
    (re.compile(r"(?i)(\bbearer\.)[^\s,'\"]+"), r"\1[redacted]"),
    # Query parameters and cookies that carry tokens.
    (
        re.compile(r"(?i)((?:^|[?&;'\"\s])(?:token|access_token|session)=)[^&;\s\"']*"),
        r"\1[redacted]",
    ),
]


def redact(text: str) -> str:
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            # uvicorn's access formatter unpacks these arguments: redact them in place
            # (the request path is the one that can carry ?token=).
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let logging report it as usual
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "itemrooms", "websockets")


def install_redaction() -> None:
    """Attach the filter to the loggers that may see a request; idempotent."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
