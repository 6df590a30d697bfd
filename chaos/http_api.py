"""The HTTP side of the contract the checks read: history, presence, readiness."""

from dataclasses import dataclass
from typing import Any

import httpx

PAGE = 1000  # the server's largest ``limit``


@dataclass(frozen=True)
class History:
    epoch: str | None
    seq: int
    messages: list[dict[str, Any]]


class HttpApi:
    def __init__(self, token: str, timeout: float = 5.0) -> None:
        self._client = httpx.AsyncClient(
            timeout=timeout, headers={"Authorization": f"Bearer {token}"}
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def ready(self, base: str) -> bool:
        return not await self.not_ready(base)

    async def not_ready(self, base: str) -> str:
        """Why ``/readyz`` is not 200 (its status and body, or the error), "" when it is."""
        try:
            answer = await self._client.get(base + "/readyz", timeout=2.0)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__} {exc}".strip()
        return "" if answer.status_code == 200 else f"{answer.status_code} {answer.text[:80]}"

    async def presence(self, base: str, item_id: str) -> set[str] | None:
        """The users in the room, or None when the process cannot answer now."""
        try:
            answer = await self._client.get(f"{base}/items/{item_id}/presence", timeout=2.0)
        except httpx.HTTPError:
            return None
        if answer.status_code != 200:
            return None
        return {member["user"] for member in answer.json()["members"]}

    async def history(self, base: str, item_id: str) -> History:
        """The room's whole history, page by page; every page must be of one epoch."""
        messages: list[dict[str, Any]] = []
        since, epoch, seq = 0, None, 0
        while True:
            answer = await self._client.get(
                f"{base}/items/{item_id}/messages", params={"since": since, "limit": PAGE}
            )
            answer.raise_for_status()
            page = answer.json()
            if since == 0:
                epoch, seq = page.get("epoch"), page["seq"]
            elif page.get("epoch") != epoch:
                raise RuntimeError(f"history of {item_id} changed epoch while being read")
            messages.extend(page["messages"])
            if len(page["messages"]) < PAGE:
                return History(epoch, seq, messages)
            since = page["messages"][-1]["seq"]
