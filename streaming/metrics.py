"""What the ingest worker's and the monitor's Prometheus endpoints share: the consumer-lag gauge
and serving a collector on /metrics. Each collector reads its owner's counters at scrape time,
so nothing is updated per event."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from streaming.consume import Outbox

__all__ = ["consumer_lag_gauge", "outbox_metrics", "serve_metrics"]


def consumer_lag_gauge(name: str, lag: Mapping[tuple[str, int], int]) -> GaugeMetricFamily:
    """The lag librdkafka last reported, per (topic, partition), as the gauge `name`."""
    gauge = GaugeMetricFamily(
        name, "Messages behind the partition end", labels=["topic", "partition"]
    )
    for (topic, partition), value in sorted(lag.items()):
        gauge.add_metric([topic, str(partition)], value)
    return gauge


def outbox_metrics(
    prefix: str, what: str, outbox: Outbox
) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """How an `Outbox` fares with Kafka: what it had to send again or cut to fit, and what waits
    for Kafka's confirmation now (the batch waits with it: positions do not move)."""
    yield CounterMetricFamily(
        f"{prefix}_retried",
        f"{what} produced again after Kafka did not confirm them (outage, expiry)",
        outbox.retried,
    )
    yield CounterMetricFamily(
        f"{prefix}_truncated",
        f"{what} cut to fit in Kafka (original.size and truncated headers)",
        outbox.truncated,
    )
    yield GaugeMetricFamily(
        f"{prefix}_waiting",
        f"{what} waiting for Kafka to confirm them; the batch waits with them",
        outbox.waiting,
    )
    yield GaugeMetricFamily(
        f"{prefix}_waiting_seconds",
        f"How long the {what.lower()} in flight have waited for Kafka",
        outbox.waiting_seconds(),
    )


def serve_metrics(collector: Collector, port: int, host: str = "127.0.0.1") -> None:
    """Expose `collector` on http://host:port/metrics (port 0: none)."""
    if port:
        REGISTRY.register(collector)
        start_http_server(port, addr=host)
