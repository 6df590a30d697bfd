"""The slim queue and flag that replace asyncio's in each WebSocket connection."""

import asyncio
import sys

from itemrooms.api.ws_primitives import Flag, ReceiveQueue


async def test_the_queue_is_fifo_and_a_reader_waits_for_a_put() -> None:
    queue = ReceiveQueue()
    assert queue.empty()
    reader = asyncio.create_task(queue.get())
    await asyncio.sleep(0)  # one loop turn: the reader is now waiting
    assert not reader.done()
    queue.put_nowait("a")
    queue.put_nowait("b")
    assert await asyncio.wait_for(reader, 5) == "a"
    assert not queue.empty()
    assert await queue.get() == "b"
    assert queue.empty()


async def test_a_cancelled_reader_leaves_the_queue_usable() -> None:
    queue = ReceiveQueue()
    reader = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    queue.put_nowait(1)
    assert await asyncio.wait_for(queue.get(), 5) == 1


async def test_the_flag_wakes_every_waiter_and_clear_makes_them_wait_again() -> None:
    flag = Flag()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    await asyncio.wait_for(asyncio.gather(*waiters), 5)
    await asyncio.wait_for(flag.wait(), 5)  # set: returns at once
    flag.clear()
    late = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    assert not late.done()
    late.cancel()
    await asyncio.gather(late, return_exceptions=True)
    assert flag._waiters in (None, [])  # a cancelled waiter is not kept


def test_an_idle_pair_is_much_smaller_than_asyncios() -> None:
    def deep_size(obj: object) -> int:
        size = sys.getsizeof(obj)
        for name in getattr(obj, "__slots__", ()) or vars(obj):
            value = getattr(obj, name)
            if value is not None and not isinstance(value, bool | int):
                size += sys.getsizeof(value)
        return size

    ours = deep_size(ReceiveQueue()) + deep_size(Flag())
    theirs = deep_size(asyncio.Queue()) + deep_size(asyncio.Event())
    assert ours * 10 < theirs
