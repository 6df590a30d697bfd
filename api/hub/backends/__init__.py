"""Backends move room events between processes and keep seq, history and presence."""

from itemrooms.api.hub.backends.base import Backend
from itemrooms.api.settings import Settings


def make_backend(settings: Settings) -> Backend:
    """Pick the backend named by ``ITEMROOMS_BACKEND``; import drivers only when used."""
    if settings.backend == "memory":
        from itemrooms.api.hub.backends.memory import MemoryBackend

        return MemoryBackend(
            history_size=settings.history_size,
            history_ttl_s=settings.history_ttl_s,
            dedup_s=settings.publish_dedup_s,
        )
    if settings.backend == "postgres":
        from itemrooms.api.hub.backends.postgres import PostgresBackend

        return PostgresBackend(
            settings.postgres_url,
            schema=settings.postgres_schema,
            history_size=settings.history_size,
            history_ttl_s=settings.history_ttl_s,
            presence_ttl_s=settings.presence_ttl_s,
            dedup_s=settings.publish_dedup_s,
            command_timeout_s=settings.postgres_timeout_s,
        )
    from itemrooms.api.hub.backends.redis import RedisBackend

    return RedisBackend(
        settings.redis_url,
        prefix=settings.redis_prefix,
        history_size=settings.history_size,
        history_ttl_s=settings.history_ttl_s,
        presence_ttl_s=settings.presence_ttl_s,
        dedup_s=settings.publish_dedup_s,
        command_timeout_s=settings.redis_timeout_s,
    )
