"""Publishes to Redis in call order, as many per round trip as are waiting.

One publish is one Lua script call (seq, stream append and pub/sub publish,
atomically: redis_scripts.PUBLISH). Sent one at a time, a process publishes
at most one message per round trip however many clients are publishing, and
a client that sends a burst waits a round trip per message. Here every
publish waiting while a batch is on the wire goes out in the next pipeline
(no MULTI: each script is atomic on its own), on one connection, in the order
the calls were made, so one client's messages keep their order.
"""

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from api.hub.backends.base import BackendUnavailable

REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)

Call = tuple[list[str], list[Any], "asyncio.Future[int]"]


class PublishPipeline:
    __slots__ = ("_redis", "_script", "_waiting", "_runner")

    def __init__(self, redis: Redis, script: AsyncScript) -> None:
        self._redis = redis
        self._script = script
        self._waiting: list[Call] = []
        self._runner: asyncio.Task[None] | None = None

    async def publish(self, keys: list[str], args: list[Any]) -> int:
        """The message's seq, once Redis has run the script; queued before any await."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
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
                    self._settle(batch, await self._execute(batch))
                except REDIS_ERRORS as exc:
                    failure = BackendUnavailable(f"Redis: {exc}")
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(failure)
                finally:
                    for _, _, future in batch:
                        future.cancel()  # only those left unsettled (stopped meanwhile)
        finally:
            self._runner = None

    @staticmethod
    def _settle(batch: list[Call], results: list[Any]) -> None:
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():
                continue  # its caller went away; the message is published anyway
            if isinstance(result, Exception):
                future.set_exception(BackendUnavailable(f"Redis: {result}"))
            else:
                future.set_result(int(result))

    async def _execute(self, batch: list[Call]) -> list[Any]:
        results = await self._pipeline(batch)
        if any(isinstance(result, NoScriptError) for result in results):
            # Redis restarted and forgot the script: none of the batch ran (every call
            # is the same script), so load it and send them all again, in order.
            await self._redis.script_load(self._script.script)
            results = await self._pipeline(batch)
        return results

    async def _pipeline(self, batch: list[Call]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys, args, _ in batch:
                pipe.evalsha(self._script.sha, len(keys), *keys, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        return results
