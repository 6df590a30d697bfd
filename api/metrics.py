"""Prometheus metrics of one process (``GET /metrics``).

Each app has its own registry (no module-level state). With ``--workers N`` every
worker keeps its own numbers: scrape each process, or run one process per port.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

FANOUT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge(
            "itemrooms_connections", "Open room connections in this process", registry=r
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
        return generate_latest(self.registry)
