"""What the routes of one running itemrooms share, found under one name on the app's state.

One name (``app.state.itemrooms``), not one per object: an app that embeds itemrooms
(api/embedding.py) keeps its own state beside ours without clashes. The lifespan sets
it; until then, every route answers that itemrooms is not running, instead of an
``AttributeError`` deep inside a handler (what a mounted app, whose lifespan never
runs, used to answer with a 500).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import HTTPException
from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    from itemrooms.api.connection_limits import ConnectionLimits
    from itemrooms.api.hub.hub import Hub
    from itemrooms.api.rate_limit import UserBuckets
    from itemrooms.api.rejection_log import RejectionLog
    from itemrooms.api.settings import Settings
    from itemrooms.auth.tokens import TokenVerifier

STATE_KEY = "itemrooms"
NOT_RUNNING = (
    "itemrooms is not running: its lifespan was never entered (a mounted app's lifespan "
    "never runs; include Itemrooms.router and enter Itemrooms.lifespan, README: Embedding)"
)


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    verifier: TokenVerifier
    hub: Hub
    limits: ConnectionLimits
    http_publishes: UserBuckets
    rejections: RejectionLog


class NotRunning(HTTPException):
    """A 503 for HTTP routes; the room route turns it into a close (api/routes/admission.py)."""

    def __init__(self) -> None:
        super().__init__(503, NOT_RUNNING)


def runtime(connection: HTTPConnection) -> Runtime:
    found: Runtime | None = getattr(connection.app.state, STATE_KEY, None)
    if found is None:
        raise NotRunning()
    return found
