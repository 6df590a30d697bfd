"""Backends move room events between processes and keep seq, history and presence."""

from api.hub.backends.base import Backend
from api.settings import Settings


def make_backend(settings: Settings) -> Backend:
    """Pick the backend named by ``ITEMROOMS_BACKEND``; import drivers only when used."""
    if settings.backend == "memory":
        from api.hub.backends.memory import MemoryBackend

        return MemoryBackend(history_size=settings.history_size)
    raise ValueError(f"backend {settings.backend!r} is not available in this build")
