"""Keep credentials out of the logs.

uvicorn logs every WebSocket handshake and HTTP request with its query string,
so a ``?token=`` credential would land in log files and log pipelines. This
filter rewrites the value of credential-bearing query parameters in every
record of uvicorn's loggers and ours before any handler formats it.
"""

import logging
import re

_SECRET_QUERY = re.compile(r"(?i)([?&](?:token|access_token|session)=)[^&\s\"']*")
REDACTED = r"\1[redacted]"


def redact(text: str) -> str:
    return _SECRET_QUERY.sub(REDACTED, text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        return True


LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "itemrooms")


def install_redaction() -> None:
    """Attach the filter to the loggers that may see a request line; idempotent."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
