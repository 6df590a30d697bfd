"""One itemrooms service as parts an app is built from: a router and a lifespan.

``create_app`` (api/app.py) serves them alone; a team's own FastAPI app embeds them
beside its routes::

    rooms = Itemrooms(Settings(backend="redis"))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with rooms.lifespan(app):
            yield  # the host's own startup and shutdown go around this

    app = FastAPI(lifespan=lifespan)
    app.include_router(rooms.router, prefix="/rt")

Why a router and a lifespan the host enters, not a mounted app: Starlette never runs a
mounted app's lifespan, so a mounted itemrooms would have no hub. The router answers
every rejection itself (api/routes/admission.py), so the host's exception handlers
change nothing on the wire.
"""

import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter
from starlette.applications import Starlette

from itemrooms.api.config_report import startup_line, unknown_variables
from itemrooms.api.connection_limits import ConnectionLimits
from itemrooms.api.dev_secret import warn_development
from itemrooms.api.hub.backends import make_backend
from itemrooms.api.hub.hub import Hub
from itemrooms.api.hub.presence import PresencePolicy
from itemrooms.api.log_redaction import install_redaction
from itemrooms.api.metrics import Metrics
from itemrooms.api.rate_limit import UserBuckets
from itemrooms.api.rejection_log import RejectionLog
from itemrooms.api.routes import health, items, rooms
from itemrooms.api.routes.demo import STATIC_DIR
from itemrooms.api.runtime import STATE_KEY, Runtime
from itemrooms.api.settings import Settings, get_settings
from itemrooms.api.version import VERSION
from itemrooms.auth.jwks import JwksCache
from itemrooms.auth.tokens import TokenVerifier

log = logging.getLogger("itemrooms")


def make_jwks(settings: Settings) -> JwksCache | None:
    if not settings.jwks_url:
        return None
    return JwksCache(
        settings.jwks_url,
        min_refetch_s=settings.jwks_min_refetch_s,
        max_age_s=settings.jwks_max_age_s,
    )


def make_verifier(settings: Settings) -> TokenVerifier:
    uses_hmac = any(alg.startswith("HS") for alg in settings.jwt_algorithms)
    return TokenVerifier(
        algorithms=tuple(settings.jwt_algorithms),
        hmac_secret=settings.hmac_secret() if uses_hmac else None,
        public_key=settings.jwt_public_key,
        jwks=make_jwks(settings),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway_s=settings.jwt_leeway_s,
        max_token_bytes=settings.max_token_bytes,
    )


class Itemrooms:
    """The rooms (``/items/{id}/ws``), the HTTP API (``/items/{id}/...``) and the
    operations routes (``/healthz``, ``/readyz``, ``/metrics``) of one service.

    Settings are checked and the token rules built here, so a misconfiguration fails
    when the host app is built, not at its first request. One per app: the lifespan
    refuses an app that already runs one.
    """

    static_dir = STATIC_DIR  # itemrooms.js, for a host that serves the browser client

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        install_redaction()
        for problem in unknown_variables(os.environ):
            log.warning(problem)
        if self.settings.env == "development":
            warn_development(self.settings.dev_secret_file)
        self.verifier = make_verifier(self.settings)
        self.router = APIRouter()
        self.router.include_router(rooms.router)
        self.router.include_router(items.router)
        self.router.include_router(health.router)

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[Runtime]:
        """The hub (and its backend) from startup to shutdown, on ``app.state.itemrooms``."""
        if getattr(app.state, STATE_KEY, None) is not None:
            raise RuntimeError("this app already runs an itemrooms: one Itemrooms per app")
        settings = self.settings
        hub = Hub(make_backend(settings), Metrics(), PresencePolicy.of(settings))
        await hub.start()
        runtime = Runtime(
            settings,
            self.verifier,
            hub,
            ConnectionLimits(settings.max_connections, settings.max_connections_per_user),
            UserBuckets(settings.http_rate_limit),
            RejectionLog(),
        )
        setattr(app.state, STATE_KEY, runtime)
        log.info(startup_line(settings, VERSION))
        # What exists now (modules, the app, its routes) lives as long as the process:
        # moved out of the collector's generations, it no longer lengthens every full
        # collection, a pause that every connection feels as latency.
        gc.collect()
        gc.freeze()
        try:
            yield runtime
        finally:
            runtime.rejections.summarise()
            try:
                await hub.stop()
            finally:
                delattr(app.state, STATE_KEY)
                hub.metrics.process_ended()
