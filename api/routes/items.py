"""The HTTP API for application backends: publish into a room, read its history and
presence, and close connections when access is revoked or the item is deleted.

A publish here takes the same path as one over a WebSocket (``Hub.publish``), so
members see one order whichever way messages came in.
"""

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from itemrooms.api.frames import ID_PATTERN, MemberModel, MessageFrame, depth, encode_data
from itemrooms.api.hub.backends.base import (
    BackendUnavailable,
    ItemClosed,
    Message,
    OutcomeUnknown,
    Sender,
)
from itemrooms.api.hub.hub import Hub
from itemrooms.api.runtime import runtime
from itemrooms.auth.credentials import ItemId
from itemrooms.auth.http_credentials import Admin, Reader, Writer

router = APIRouter(prefix="/items/{item_id}", tags=["items"])

HTTP_CLIENT_ID = "http"  # the sender's client_id of messages published over HTTP
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or bad bearer token (see WWW-Authenticate)"},
    403: {"description": "Valid token without the scope or the item"},
}


class PublishRequest(BaseModel):
    data: Any = Field(description="Any JSON value; delivered to members as the message's data")


class PublishResponse(BaseModel):
    item_id: str
    seq: int = Field(description="The message's place in the room, as members will see it")
    epoch: str = Field(description="The room's sequence the seq belongs to")
    duplicate: bool = Field(
        description="True when the Idempotency-Key was already used: nothing was published, "
        "and seq is the original message's"
    )
    id: str | None = Field(None, description="The Idempotency-Key, when one was given")


class HistoryResponse(BaseModel):
    item_id: str
    seq: int = Field(description="The room's latest seq")
    epoch: str = Field(description="The room's sequence; give it back with `since` to resume")
    recovered: bool = Field(
        description="False when messages after `since` were already gone, or when `epoch` "
        "is not the room's (the messages are then the current epoch's, from its start)"
    )
    messages: list[MessageFrame]


class PresentUser(BaseModel):
    user: str = Field(description="The token's sub")
    connections: int = Field(ge=1, description="The user's connections, on every process")


class PresenceResponse(BaseModel):
    item_id: str
    member_count: int = Field(ge=0, description="Users in the room, on every process")
    members: list[PresentUser] = Field(
        description="One entry per user, in the byte order of their names, after `after`"
    )
    next: str | None = Field(
        description="Give it as `after` for the next page; null on the last page"
    )


MAX_BAN_S = 30 * 86400


class KickRequest(BaseModel):
    sub: str = Field(min_length=1, max_length=256, description="The user whose connections close")
    ban_s: float | None = Field(
        None,
        ge=0,
        le=MAX_BAN_S,
        description="For how long the user's joins are then refused (1008 forbidden), on "
        "every process; 0 for a kick that does not hold; default ITEMROOMS_KICK_BAN_S",
    )


class ControlResponse(BaseModel):
    item_id: str
    action: str


def hub_of(request: Request) -> Hub:
    return runtime(request).hub


async def bounded_body(request: Request) -> None:
    """413 above the message size limit, before the body is parsed."""
    settings = runtime(request).settings
    limit = settings.max_message_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body over {limit} bytes")
    if len(await request.body()) > limit:
        raise HTTPException(413, f"body over {limit} bytes")


def unavailable() -> HTTPException:
    return HTTPException(503, "backend unavailable; retry", headers={"Retry-After": "1"})


def invalid_data(reason: str) -> RequestValidationError:
    """A 422 in FastAPI's own shape, the one the OpenAPI document promises."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", "data"), "msg": reason, "input": None}]
    )


def outcome_unknown() -> HTTPException:
    return HTTPException(
        504,
        "outcome unknown: the message may or may not be published; retry with the "
        "same Idempotency-Key",
    )


def message_frame(message: Message) -> MessageFrame:
    frame = MessageFrame(
        type="message",
        item_id=message.item_id,
        seq=message.seq,
        ts=message.ts,
        sender=MemberModel(user=message.sender.user, client_id=message.sender.client_id),
        data=orjson.loads(message.data),
    )
    if message.id is not None:
        frame.id = message.id  # set, so that response_model_exclude_unset keeps it
    return frame


@router.post(
    "/messages",
    summary="Publish a message into the room (needs items:write)",
    response_model=PublishResponse,
    response_model_exclude_none=True,  # "id" only when an Idempotency-Key was given
    dependencies=[Depends(bounded_body)],
    responses={
        **AUTH_ERRORS,
        413: {"description": "Body over the message size limit"},
        409: {"description": "Not published: the item is closed (POST /items/{id}/open)"},
        429: {"description": "Not published: over ITEMROOMS_HTTP_RATE_LIMIT for this user"},
        503: {"description": "Not published: the backend is unavailable; retry"},
        504: {"description": "Outcome unknown: retry with the same Idempotency-Key"},
    },
)
async def publish(
    item_id: ItemId,
    claims: Writer,
    request: Request,
    body: Annotated[PublishRequest, Body()],
    idempotency_key: Annotated[
        str | None,
        Header(
            pattern=ID_PATTERN,
            description="A publish id: a repeat within ITEMROOMS_PUBLISH_DEDUP_S by the same "
            "user into the same room is not published again (answered duplicate: true)",
        ),
    ] = None,
) -> PublishResponse:
    running = runtime(request)
    settings = running.settings
    wait = running.http_publishes.retry_after(claims.sub)
    if wait:
        raise HTTPException(
            429,
            f"not published: over {settings.http_rate_limit:g} HTTP publishes a second for "
            "this user; retry later",
            headers={"Retry-After": str(wait)},
        )
    if depth(body.data, settings.max_json_depth) > settings.max_json_depth:
        raise invalid_data(f"data nests deeper than {settings.max_json_depth} levels")
    hub = hub_of(request)
    sender = Sender(claims.sub, HTTP_CLIENT_ID)
    try:
        data = encode_data(body.data)
    except ValueError as exc:
        raise invalid_data(str(exc)) from exc
    try:
        published = await hub.publish(item_id, sender, data, None, idempotency_key)
    except ItemClosed as exc:
        raise HTTPException(
            409, "not published: the item is closed; POST /items/{id}/open"
        ) from exc
    except BackendUnavailable as exc:
        hub.metrics.backend_errors.inc()
        raise unavailable() from exc
    except OutcomeUnknown as exc:
        hub.metrics.backend_errors.inc()
        raise outcome_unknown() from exc
    duplicate = published.duplicate is not None
    if not duplicate:
        hub.metrics.published.labels("http").inc()
    return PublishResponse(
        item_id=item_id,
        seq=published.seq,
        epoch=published.epoch,
        duplicate=duplicate,
        id=idempotency_key,
    )


@router.get(
    "/messages",
    summary="Messages after `since`, oldest first (needs items:read)",
    response_model=HistoryResponse,
    response_model_exclude_unset=True,  # no "ref": history is nobody's acknowledgement
    responses=AUTH_ERRORS,
)
async def history(
    item_id: ItemId,
    claims: Reader,
    request: Request,
    since: Annotated[int, Query(ge=0, le=2**62)] = 0,
    epoch: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> HistoryResponse:
    try:
        snapshot = await hub_of(request).backend.snapshot(item_id, since, epoch, limit)
    except BackendUnavailable as exc:
        raise unavailable() from exc
    return HistoryResponse(
        item_id=item_id,
        seq=snapshot.seq,
        epoch=snapshot.epoch,
        recovered=snapshot.recovered,
        messages=[message_frame(m) for m in snapshot.messages],
    )


@router.get(
    "/presence",
    summary="Who is in the room now, one entry per user, across all processes, a page at "
    "a time (needs items:read)",
    response_model=PresenceResponse,
    responses=AUTH_ERRORS,
)
async def presence(
    item_id: ItemId,
    claims: Reader,
    request: Request,
    after: Annotated[str | None, Query(min_length=1, max_length=1024)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> PresenceResponse:
    try:
        page = await hub_of(request).backend.presence_page(item_id, after, limit)
    except BackendUnavailable as exc:
        raise unavailable() from exc
    return PresenceResponse(
        item_id=item_id,
        member_count=page.member_count,
        members=[PresentUser(user=u, connections=n) for u, n in page.users],
        next=page.next,
    )


@router.post(
    "/kick",
    summary="Close one user's connections to the room on every process, and refuse the "
    "user's joins for ban_s seconds (needs items:admin)",
    status_code=202,
    response_model=ControlResponse,
    responses=AUTH_ERRORS,
)
async def kick(
    item_id: ItemId, claims: Admin, request: Request, body: KickRequest
) -> ControlResponse:
    ban_s = runtime(request).settings.kick_ban_s if body.ban_s is None else body.ban_s
    return await moderate(request, item_id, "kick", body.sub, ban_s)


@router.post(
    "/close",
    summary="Close the room for every member and refuse joins and HTTP publishes until "
    "it is opened, e.g. the item was deleted (needs items:admin)",
    status_code=202,
    response_model=ControlResponse,
    responses=AUTH_ERRORS,
)
async def close(item_id: ItemId, claims: Admin, request: Request) -> ControlResponse:
    return await moderate(request, item_id, "close")


@router.post(
    "/open",
    summary="Reopen a closed room: joins and publishes are taken again (needs items:admin)",
    response_model=ControlResponse,
    responses=AUTH_ERRORS,
)
async def open_item(item_id: ItemId, claims: Admin, request: Request) -> ControlResponse:
    return await moderate(request, item_id, "open")


async def moderate(
    request: Request, item_id: str, action: str, user: str | None = None, ban_s: float = 0.0
) -> ControlResponse:
    try:
        await hub_of(request).control(item_id, action, user, ban_s)
    except BackendUnavailable as exc:
        raise unavailable() from exc
    return ControlResponse(item_id=item_id, action=action)
