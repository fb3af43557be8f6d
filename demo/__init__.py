"""`fstore demo`: the whole product end to end — feature repo, a stream with planted fraud,
ingestion, a point-in-time training set, a LightGBM model, serving, the online/offline check
and drift — on real Kafka and Redis. It sits above every other package and drives them."""

from __future__ import annotations

from demo.data import Population, StreamConfig, Transactions
from demo.errors import DemoError
from demo.options import DemoOptions
from demo.report import Results
from demo.steps import DemoRun

__all__ = [
    "DemoError",
    "DemoOptions",
    "DemoRun",
    "Population",
    "Results",
    "StreamConfig",
    "Transactions",
]
