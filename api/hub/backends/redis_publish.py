"""Publishes to Redis in call order, as many per round trip as are waiting.

One publish is one Lua script call (seq, stream append and pub/sub publish,
atomically: redis_scripts.PUBLISH). Sent one at a time, a process publishes
at most one message per round trip however many clients are publishing, and
a client that sends a burst waits a round trip per message. Here every
publish waiting while a batch is on the wire goes out in the next pipeline
(no MULTI: each script is atomic on its own), on one connection, in the order
the calls were made, so one client's messages keep their order.

Nothing is retried: a publish that Redis may have applied is never sent again
(that is how one publish became two messages). A batch that fails before it is
sent (no connection to be had) is certainly unpublished: ``BackendUnavailable``.
One that fails after (a timeout, a connection cut) may have been applied:
``OutcomeUnknown``, and the client retries with the same id, which Redis
applies at most once.
"""

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from itemrooms.api.hub.backends.base import BackendUnavailable, OutcomeUnknown

REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)

Call = tuple[list[str], list[Any], "asyncio.Future[Any]"]


class _Unsent(Exception):
    """The batch never left this process."""


class PublishPipeline:
    __slots__ = ("_redis", "_script", "_waiting", "_runner")

    def __init__(self, redis: Redis, script: AsyncScript) -> None:
        self._redis = redis
        self._script = script
        self._waiting: list[Call] = []
        self._runner: asyncio.Task[None] | None = None

    async def publish(self, keys: list[str], args: list[Any]) -> Any:
        """The script's answer, once Redis has run it; queued before any await."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((keys, args, future))
        if self._runner is None:
            self._runner = loop.create_task(self._run(), name="redis publishes")
        return await future

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        for _, _, future in self._waiting:
            future.cancel()

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    await self._send(batch)
                finally:
                    for _, _, future in batch:
                        future.cancel()  # only those left unsettled (stopped meanwhile)
        finally:
            self._runner = None

    async def _send(self, batch: list[Call]) -> None:
        failure: Exception
        try:
            self._settle(batch, await self._execute(batch))
            return
        except _Unsent as exc:
            failure = BackendUnavailable(f"Redis: {exc.__cause__}")
        except REDIS_ERRORS as exc:
            failure = OutcomeUnknown(f"Redis gave no answer: {exc!r}")
        for _, _, future in batch:
            if not future.done():
                future.set_exception(failure)

    @staticmethod
    def _settle(batch: list[Call], results: list[Any]) -> None:
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():
                continue  # its caller went away; the message is published anyway
            if isinstance(result, BackendUnavailable | OutcomeUnknown):
                future.set_exception(result)
            elif isinstance(result, Exception):  # refused by Redis: nothing was written
                future.set_exception(BackendUnavailable(f"Redis: {result}"))
            else:
                future.set_result(result)

    async def _execute(self, batch: list[Call]) -> list[Any]:
        results = await self._pipeline(batch)
        unrun = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if unrun:
            # Redis restarted (or was told to forget its scripts): those calls did not
            # run, so load the script and send them again, in order. Only them: a
            # SCRIPT FLUSH can land in the middle of a batch.
            again: list[Any]
            try:
                await self._redis.script_load(self._script.script)
                again = await self._pipeline([batch[i] for i in unrun])
            except _Unsent as exc:
                again = [BackendUnavailable(f"Redis: {exc.__cause__}")] * len(unrun)
            except REDIS_ERRORS as exc:
                # SCRIPT LOAD or the batch itself: only the batch may have run.
                again = [OutcomeUnknown(f"Redis gave no answer: {exc!r}")] * len(unrun)
            for i, result in zip(unrun, again, strict=True):
                results[i] = result
        return results

    async def _pipeline(self, batch: list[Call]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        try:
            # Taken first, so that failing to get one is told apart from failing after
            # the batch was written (the pipeline would do both in one call).
            pipe.connection = await self._redis.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        except REDIS_ERRORS as exc:
            await pipe.reset()  # type: ignore[no-untyped-call]
            raise _Unsent() from exc
        async with pipe:
            for keys, args, _ in batch:
                pipe.evalsha(self._script.sha, len(keys), *keys, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        return results
