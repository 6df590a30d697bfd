"""Publishes to PostgreSQL in call order, as many per round trip and per commit as are
waiting.

One publish is one row of ``{s}.publish``'s arrays (postgres_schema.py): the id check,
the seq, the history row, the trim and the NOTIFY, in one transaction. Sent one at a
time, a process would publish at most one message per round trip and per WAL flush
however many clients publish; here every publish waiting while a batch is in flight
goes out in the next batch, on one connection, in the order the calls were made, so
one client's messages keep their order.

Nothing is retried: a publish the database may have committed is never sent again.
A batch that never left this process (no connection to be had) or that the server
refused with an error (the transaction rolled back) is certainly unpublished:
``BackendUnavailable``. One whose connection failed or timed out after it was sent
may have committed: ``OutcomeUnknown``, and the client retries with the same id,
which the database applies at most once.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from itemrooms.api.hub.backends.base import BackendUnavailable, OutcomeUnknown

# Whatever a call to PostgreSQL can raise: its own errors, a lost or refused connection,
# a timeout, and asyncpg's own confusion about a connection the server terminated
# while it sat idle in the pool ("cannot switch to state ...").
PG_ERRORS = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    TimeoutError,
)
# Errors after which the server may have committed (the connection went, or the
# server was told to stop): everything else it reports means the transaction rolled back.
_MAYBE_COMMITTED = (asyncpg.PostgresConnectionError, asyncpg.OperatorInterventionError)

MAX_BATCH = 500

# (item, user, client_id, ref, data, id, floor), and the caller's future.
Call = tuple[str, str, str, str | None, str, str | None, int, "asyncio.Future[Any]"]


class PublishBatcher:
    __slots__ = ("_connect", "_sql", "_history", "_dedup_ms", "_conn", "_waiting", "_runner")

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        schema: str,
        history_size: int,
        dedup_ms: int,
    ) -> None:
        self._connect = connect
        self._sql = f"SELECT * FROM {schema}.publish($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        self._history = history_size
        self._dedup_ms = dedup_ms
        self._conn: Any = None
        self._waiting: list[Call] = []
        self._runner: asyncio.Task[None] | None = None

    async def publish(
        self,
        item_id: str,
        user: str,
        client_id: str,
        ref: str | None,
        data: str,
        id: str | None,
        floor: int,
    ) -> Any:
        """The row ``{s}.publish`` gave for this call; queued before any await."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((item_id, user, client_id, ref, data, id, floor, future))
        if self._runner is None:
            self._runner = loop.create_task(self._run(), name="postgres publishes")
        return await future

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        for call in self._waiting:
            call[-1].cancel()
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    def reset(self) -> None:
        """The database restarted or cut this process off: the next batch opens a new
        connection (one in flight is answered ``OutcomeUnknown``)."""
        self._drop(BackendUnavailable("reset"))

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                try:
                    await self._send(batch)
                finally:
                    for call in batch:
                        call[-1].cancel()  # only those left unsettled (stopped meanwhile)
        finally:
            self._runner = None

    async def _send(self, batch: list[Call]) -> None:
        failure: Exception
        try:
            conn = await self._connection()
        except PG_ERRORS as exc:
            failure = BackendUnavailable(f"PostgreSQL: {exc}")
        else:
            columns = list(zip(*batch, strict=True))
            try:
                rows = await conn.fetch(self._sql, *columns[:7], self._history, self._dedup_ms)
            except _MAYBE_COMMITTED as exc:
                failure = self._drop(OutcomeUnknown(f"PostgreSQL gave no answer: {exc!r}"))
            except asyncpg.PostgresError as exc:  # refused: the transaction rolled back
                failure = BackendUnavailable(f"PostgreSQL: {exc}")
            except PG_ERRORS as exc:  # a timeout, a connection cut after sending
                failure = self._drop(OutcomeUnknown(f"PostgreSQL gave no answer: {exc!r}"))
            else:
                for row in rows:
                    future = batch[row["n"] - 1][-1]
                    if not future.done():  # else its caller went away; published anyway
                        future.set_result(row)
                return
        for call in batch:
            if not call[-1].done():
                call[-1].set_exception(failure)

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            self._conn = None
            self._conn = await self._connect()
        return self._conn

    def _drop(self, failure: Exception) -> Exception:
        """Forget a connection in an unknown state; the next batch opens a new one."""
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
        return failure
