"""How itemrooms runs uvicorn: one place for the server options that matter.

- ``websockets-sansio`` (uvicorn's maintained implementation) as extended in
  api/ws_protocol.py: its ``send`` waits while the socket is backpressured, which
  is what lets a member's bounded queue detect a slow consumer (wsproto buffers
  without limit); the extension answers malformed handshakes and speaks our close
  codes.
- httptools as extended in api/http_protocol.py: a request's headers must arrive
  within 10 s (uvicorn waits for them forever).
- per-message deflate off: it roughly doubles memory per connection.
- a graceful-shutdown timeout: without one, a single client that never reads
  blocks shutdown forever.
- the WebSocket frame limit is ``ITEMROOMS_MAX_MESSAGE_BYTES``.
"""

import copy
import logging
from typing import Any

from uvicorn.config import LOGGING_CONFIG

from itemrooms.api.access_log import CONNECTIONS_LOGGER
from itemrooms.api.settings import Settings


def log_config(log_level: str = "info", access_log: bool = False) -> dict[str, Any]:
    """uvicorn's logging, plus our logger, with credentials redacted at every handler;
    per-connection lines only with ``access_log`` (api/access_log.py)."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": "itemrooms.api.log_redaction.RedactSecrets"}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact"]
    config["loggers"]["itemrooms"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    # Below "itemrooms", so it shares its handler.
    level = log_level.upper()  # uvicorn.config registered "TRACE"
    if not access_log and logging.getLevelName(level) < logging.WARNING:
        level = "WARNING"
    config["loggers"][CONNECTIONS_LOGGER] = {"level": level}
    return config


def protocol_options(settings: Settings) -> dict[str, Any]:
    """What a host app that embeds itemrooms passes to ``uvicorn.run`` (README: Embedding)."""
    return {
        "http": "itemrooms.api.http_protocol:RoomsHttpToolsProtocol",
        "ws": "itemrooms.api.ws_protocol:RoomsWebSocketProtocol",
        "ws_per_message_deflate": False,
        "ws_max_size": settings.max_message_bytes,
        "ws_ping_interval": settings.ping_interval_s,
        "ws_ping_timeout": settings.ping_timeout_s,
        "timeout_graceful_shutdown": settings.shutdown_timeout_s,
    }


def uvicorn_options(settings: Settings, host: str, port: int, workers: int = 1) -> dict[str, Any]:
    return {
        "host": host,
        "port": port,
        "workers": workers,
        "factory": True,
        "loop": "uvloop",
        **protocol_options(settings),
        "lifespan": "on",
        # Off unless the operator names its proxies: a forged X-Forwarded-For from
        # anyone else would otherwise pick the address our logs and checks see.
        "proxy_headers": settings.forwarded_allow_ips is not None,
        "forwarded_allow_ips": settings.forwarded_allow_ips or "",
        "log_config": log_config(settings.log_level, settings.access_log),
        "access_log": settings.access_log,
        "log_level": settings.log_level,
    }
