"""Backends under test: every backend must pass the same contract suite."""

from collections.abc import AsyncIterator

import pytest

from api.hub.backends.base import Backend, Event
from api.hub.backends.memory import MemoryBackend

HISTORY = 10


class Recorder:
    """An EventSink that keeps what it was given."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)


@pytest.fixture(params=["memory"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Backend, Recorder]]:
    recorder = Recorder()
    instance: Backend = MemoryBackend(history_size=HISTORY)
    await instance.start(recorder)
    yield instance, recorder
    await instance.stop()
