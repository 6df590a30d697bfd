"""Prometheus metrics (``GET /metrics``): of this process, or of every worker at once.

Each app has its own registry (no module-level state). With ``--workers N`` the
workers share one port, so a scrape reaches any one of them: ``itemrooms serve`` then
sets ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode, chosen when
prometheus-client is imported), every worker writes its values there, and whichever
worker answers a scrape sums them all. The connections gauge counts live workers only
(``livesum``); a worker marks itself dead at shutdown.
"""

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_DIR))


FANOUT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge(
            "itemrooms_connections",
            "Open room connections (of every worker with --workers)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.joins = Counter("itemrooms_joins", "Room joins", registry=r)
        self.rejections = Counter(
            "itemrooms_rejections", "Handshakes refused, by close reason", ["reason"], registry=r
        )
        self.closes = Counter(
            "itemrooms_server_closes",
            "Connections the server closed, by reason (slow_consumer, token_expired, ...)",
            ["reason"],
            registry=r,
        )
        self.published = Counter(
            "itemrooms_messages_published", "Messages published, by way", ["via"], registry=r
        )
        self.delivered = Counter(
            "itemrooms_messages_delivered", "Message frames queued to members", registry=r
        )
        self.dropped = Counter(
            "itemrooms_frames_dropped",
            "Frames dropped because the member was being closed",
            registry=r,
        )
        self.fanout_seconds = Histogram(
            "itemrooms_fanout_seconds",
            "From a message being accepted to its frame handed to a member's socket (sampled)",
            buckets=FANOUT_BUCKETS,
            registry=r,
        )
        self.backend_errors = Counter(
            "itemrooms_backend_errors", "Backend calls that failed (Redis away)", registry=r
        )

    def render(self) -> bytes:
        if not multiprocess_mode():
            return generate_latest(self.registry)
        every_worker = CollectorRegistry()
        multiprocess.MultiProcessCollector(every_worker)  # type: ignore[no-untyped-call]
        return generate_latest(every_worker)

    @staticmethod
    def process_ended() -> None:
        """This worker's live gauges no longer count (multiprocess mode only)."""
        if multiprocess_mode():
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
