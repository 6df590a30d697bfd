"""An application backend publishing over HTTP with an ``Idempotency-Key``.

200: acked (``seq``, ``epoch``, ``duplicate``); 503: certainly not published (never
retried, so the checks can prove it absent); 504, a timeout or a dropped
connection: outcome unknown, retried with the same key; a connection that could
not even be opened: not sent, tried on the next process. One request at a time,
each to the next process, as through a load balancer.
"""

import asyncio
import time
from collections.abc import Sequence

import httpx

from chaos.ledger import Ack, Attempt, Ledger, PublishRecord
from chaos.processes import ServerProcess

REQUEST_TIMEOUT_S = 10.0  # longer than the server's command timeout: its answer counts
RETRY_DELAY_S = 0.25


class HttpPublisher:
    def __init__(
        self,
        token: str,
        item_id: str,
        processes: Sequence[ServerProcess],
        ledger: Ledger,
        tag: str,
        rate: float,
    ) -> None:
        self.name = "http"
        self.item_id = item_id
        self.processes = processes
        self.ledger = ledger
        self.tag = tag
        self.interval = 1.0 / rate
        self.generating = True
        self.count = 0
        self.turn = 0
        self.records: dict[str, PublishRecord] = {}
        self.retry: list[str] = []
        self._client = httpx.AsyncClient(
            timeout=REQUEST_TIMEOUT_S, headers={"Authorization": f"Bearer {token}"}
        )
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def settled(self) -> bool:
        return not self.retry

    def unsettled(self) -> list[PublishRecord]:
        return [r for r in self.records.values() if r.status == "unknown"]

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="http publisher")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self._client.aclose()

    async def _run(self) -> None:
        while not self._stopping:
            started = time.monotonic()
            if self.retry:
                await self._post(self.records[self.retry.pop(0)])
            elif self.generating:
                await self._post(self._new_record())
            # the publishing pace (and the pause between retries): a real duration
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def _new_record(self) -> PublishRecord:
        self.count += 1
        record_id = f"{self.tag}.http.{self.count}"
        record = PublishRecord(record_id, self.name, {"id": record_id, "n": self.count})
        self.records[record_id] = record
        self.ledger.record(record)
        return record

    async def _post(self, record: PublishRecord) -> None:
        server = self.processes[self.turn % len(self.processes)]
        self.turn += 1
        attempt = Attempt(
            f"http#{len(record.attempts) + 1}", f"http:{server.name}", time.monotonic()
        )
        record.attempts.append(attempt)
        try:
            answer = await self._client.post(
                f"{server.http_url}/items/{self.item_id}/messages",
                json={"data": record.data},
                headers={"Idempotency-Key": record.id},
            )
        except httpx.ConnectError:
            attempt.settle("not_sent")
            self.retry.append(record.id)
            return
        except httpx.HTTPError as exc:
            attempt.settle(f"outcome_unknown ({type(exc).__name__})")
            self.retry.append(record.id)
            return
        if answer.status_code == 200:
            body = answer.json()
            attempt.settle("duplicate" if body.get("duplicate") else "acked")
            ack = Ack(
                body.get("epoch"), int(body["seq"]), bool(body.get("duplicate")), time.monotonic()
            )
            record.acks.append(ack)
        elif answer.status_code == 503:
            attempt.settle("unavailable")
            if record.status == "unknown":
                self.retry.append(record.id)
        elif answer.status_code == 504:
            attempt.settle("outcome_unknown")
            self.retry.append(record.id)
        else:
            attempt.settle(f"http {answer.status_code}")
            self.ledger.violation(
                f"http: publish {record.id} to {server.name} answered {answer.status_code} "
                f"{answer.text[:200]}"
            )
