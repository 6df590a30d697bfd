"""Liveness, readiness and metrics, for load balancers, orchestrators and Prometheus."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from itemrooms.api.runtime import runtime

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the backend answers",
    responses={503: {"description": "The backend is not ready"}},
)
async def readyz(request: Request) -> JSONResponse:
    hub = runtime(request).hub
    ready = await hub.backend.ready()
    return JSONResponse({"status": "ready" if ready else "not_ready"}, 200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics of this process", response_class=Response)
async def metrics(request: Request) -> Response:
    hub = runtime(request).hub
    return Response(hub.metrics.render(), media_type=CONTENT_TYPE_LATEST)
