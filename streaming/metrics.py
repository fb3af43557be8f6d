"""What the ingest worker's and the monitor's Prometheus endpoints share: the consumer-lag gauge
and serving a collector on /metrics. Each collector reads its owner's counters at scrape time,
so nothing is updated per event."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["consumer_lag_gauge", "serve_metrics"]


def consumer_lag_gauge(name: str, lag: Mapping[tuple[str, int], int]) -> GaugeMetricFamily:
    """The lag librdkafka last reported, per (topic, partition), as the gauge `name`."""
    gauge = GaugeMetricFamily(
        name, "Messages behind the partition end", labels=["topic", "partition"]
    )
    for (topic, partition), value in sorted(lag.items()):
        gauge.add_metric([topic, str(partition)], value)
    return gauge


def serve_metrics(collector: Collector, port: int, host: str = "127.0.0.1") -> None:
    """Expose `collector` on http://host:port/metrics (port 0: none)."""
    if port:
        REGISTRY.register(collector)
        start_http_server(port, addr=host)
