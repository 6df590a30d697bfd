"""The room route's gate: every handshake ends admitted or refused, and nothing is raised.

Why nothing is raised: FastAPI hands an exception from a dependency, or a parameter
that fails validation, to the *application's* exception handlers. In an app that embeds
itemrooms (api/embedding.py) those are the host's, and Starlette's default answers a
refused WebSocket with a bare HTTP 403, which tells a client nothing. A refusal returned
here is delivered by the route itself (api/rejections.py), as PROTOCOL.md's close code
and reason, whatever app the router is in. So the parameters are read here too, not
declared to FastAPI: ``item_id``, then the credential, then ``since`` and ``epoch``.
"""

import logging
import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, WebSocket, WebSocketException

from itemrooms.api.close_codes import INTERNAL_ERROR, POLICY_VIOLATION, Close, Reason
from itemrooms.api.frames import is_id
from itemrooms.api.runtime import NotRunning, runtime
from itemrooms.auth.credentials import is_item_id, room_claims
from itemrooms.auth.tokens import Claims

log = logging.getLogger("itemrooms.rooms")

# The HTTP history route's bound too: far above any seq, far below what a backend's
# 64-bit counters (Redis' INCR) can be compared with.
MAX_SINCE = 2**62
_is_since = re.compile(r"[0-9]{1,19}").fullmatch


@dataclass(frozen=True, slots=True)
class Admitted:
    item_id: str
    claims: Claims
    since: int | None
    epoch: str | None


async def admission(websocket: WebSocket) -> Admitted | Close:
    item_id: str = websocket.path_params.get("item_id", "")
    if not is_item_id(item_id):
        return Close(POLICY_VIOLATION, Reason.INVALID_ITEM_ID)
    try:
        running = runtime(websocket)
    except NotRunning as exc:
        log.error("room %s: %s", item_id, exc.detail)
        return INTERNAL_ERROR
    try:
        claims = await room_claims(
            websocket, item_id, running.verifier, running.settings.allowed_origins
        )
    except WebSocketException as exc:
        return Close(exc.code, exc.reason or Reason.INTERNAL_ERROR)
    query = websocket.query_params
    since: int | None = None
    raw_since = query.get("since")
    if raw_since is not None:
        if not _is_since(raw_since) or int(raw_since) > MAX_SINCE:
            return Close(POLICY_VIOLATION, Reason.INVALID_SINCE)
        since = int(raw_since)
    epoch = query.get("epoch")
    if epoch is not None and not is_id(epoch):
        return Close(POLICY_VIOLATION, Reason.INVALID_REQUEST)
    return Admitted(item_id, claims, since, epoch)


Admission = Annotated[Admitted | Close, Depends(admission)]
