"""`monitor --watch`'s reference from the offline log: the newest events, without loading it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from featurestore.config import OfflineSettings, Settings, WatchSettings
from featurestore.models.profile import column_profile
from featurestore.offline.log import OFFSET, PARTITION, TIMESTAMP, OfflineStore
from featurestore.registry import RegisteredView
from streaming.errors import StreamingError
from streaming.monitor.references import INPUT, input_reference
from tests.streaming.conftest import make_view

US = 1_000_000


def test_the_reference_is_the_newest_events_as_before(tmp_path: Path) -> None:
    settings = Settings(offline=OfflineSettings(root=tmp_path))
    view = RegisteredView(make_view("txns"), 1, "test", datetime.now(UTC))
    store = OfflineStore(settings.offline)
    rng = np.random.default_rng(3)
    for batch in range(8):
        n = 300
        rows = pa.table(
            {
                "user_id": [f"u{i % 9}" for i in range(n)],
                "amount": rng.normal(50, 10, n),
                "merchant": ["m"] * n,
                # Coarse times: many ties across partitions, which (partition, offset) orders.
                TIMESTAMP: pa.array(
                    1_767_225_600 * US + rng.integers(0, 40, n) * 60 * US,
                    pa.timestamp("us", tz="UTC"),
                ),
                PARTITION: pa.array(np.full(n, batch % 3), pa.int32()),
                OFFSET: pa.array(np.arange(batch * n, (batch + 1) * n), pa.int64()),
            }
        )
        store.append(view.name, 1, rows)
        if batch == 5:
            store.append(view.name, 1, rows)  # a replayed batch: counted once
    watch = WatchSettings(reference_rows=500)

    reference = input_reference(settings, view, watch)

    # What it computed when it held the whole log in memory.
    events = store.read_events(view.name, 1).sort_by(TIMESTAMP)
    newest = events.slice(events.num_rows - 500)["amount"].to_numpy()
    assert reference.columns[(INPUT, "amount")] == column_profile(newest)
    assert reference.names == ("amount",)


def test_an_empty_log_is_a_clear_error(tmp_path: Path) -> None:
    settings = Settings(offline=OfflineSettings(root=tmp_path))
    view = RegisteredView(make_view("txns"), 1, "test", datetime.now(UTC))
    with pytest.raises(StreamingError, match="offline log is empty"):
        input_reference(settings, view, WatchSettings())
