"""Prometheus metrics of a monitor, read from its counters and latest records at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from streaming.metrics import consumer_lag_gauge, outbox_metrics

__all__ = ["MonitorCollector"]

if TYPE_CHECKING:
    from streaming.monitor.monitor import Monitor

_COLUMN = ["model", "version", "role", "kind", "column"]
_STATISTICS = {
    "psi": "Population stability index of the newest closed window",
    "js": "Jensen-Shannon distance (base 2) of the newest closed window",
    "ks": "Binned KS statistic of the newest closed window",
    "missing_rate": "Share of missing values in the newest closed window",
    "n": "Rows in the newest closed window",
}


class MonitorCollector(Collector):
    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        counters = self.monitor.counters
        records = CounterMetricFamily(
            "fstore_monitor_records", "Records consumed, by outcome", labels=["outcome"]
        )
        for outcome in (
            "consumed",
            "counted",
            "late",
            "dead_lettered",
            "unmonitored",
            "request_fed",
        ):
            records.add_metric([outcome], getattr(counters, outcome))
        yield records
        labels = CounterMetricFamily(
            "fstore_monitor_labels", "Labels, by join outcome", labels=["outcome"]
        )
        labels.add_metric(["parked"], counters.labels)
        labels.add_metric(["matched"], counters.labels_matched)
        labels.add_metric(["unmatched"], counters.labels_unmatched)
        labels.add_metric(["late"], counters.labels_late)
        yield labels
        yield CounterMetricFamily(
            "fstore_monitor_alert_events", "Alert and resolved events sent", counters.alerts
        )
        yield CounterMetricFamily(
            "fstore_monitor_batch_seconds", "Time spent processing batches", counters.batch_seconds
        )
        # drift records, alert events and dead letters
        yield from outbox_metrics("fstore_monitor_outputs", "Outputs", self.monitor.outbox)
        yield GaugeMetricFamily(
            "fstore_monitor_idle_partitions",
            "Partitions of the prediction log idle past monitor.idle_timeout (not holding "
            "the watermark back)",
            len(self.monitor.idle),
        )
        yield CounterMetricFamily(
            "fstore_monitor_state_expired",
            "Closed windows and label pairs found expired when closing (state_grace exceeded)",
            counters.expired,
        )
        latest = list(self.monitor.latest.values())
        for name, text in _STATISTICS.items():
            gauge = GaugeMetricFamily(f"fstore_drift_{name}", text, labels=_COLUMN)
            for record in latest:
                value = record.get(name)
                if isinstance(value, int | float):
                    gauge.add_metric([str(record[k]) for k in _COLUMN], float(value))
            yield gauge
        alerting = GaugeMetricFamily(
            "fstore_drift_alerting",
            "1 while the column's newest window is in alert",
            labels=_COLUMN,
        )
        live = GaugeMetricFamily(
            "fstore_live_metric",
            "Live primary metric from joined labels, newest reported window",
            labels=_COLUMN,
        )
        for record in latest:
            labels_of = [str(record[k]) for k in _COLUMN]
            alerting.add_metric(labels_of, 1.0 if record.get("status") == "alert" else 0.0)
            value = record.get("live")
            if isinstance(value, int | float):
                live.add_metric(labels_of, float(value))
        yield alerting
        yield live
        yield consumer_lag_gauge("fstore_monitor_consumer_lag", self.monitor.lag)
