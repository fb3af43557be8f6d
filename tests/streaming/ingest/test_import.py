"""`fstore import`: history from files, validated like the stream, into the log and online."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from featurestore.config import Settings
from featurestore.offline.log import OfflineStore
from featurestore.online import OnlineStore, read_features
from featurestore.registry import RegisteredView
from featurestore.tiles import TileLayout
from featurestore.timestamps import parse_timestamp
from streaming.ingest.importer import IMPORT_PARTITION, import_events
from tests.streaming.conftest import make_view

pytestmark = pytest.mark.integration

CSV = """user_id,amount,merchant,ts,extra
ann,10.5,m1,2026-03-01T12:00:00Z,x
ann,4,m2,2026-03-01T12:03:00+00:00,y
bob,7,m1,1772366520000,z
ann,ten,m1,2026-03-01T12:01:00Z,bad amount
,3,m1,2026-03-01T12:01:00Z,no user
bob,2,m3,2026-03-01T12:01:00,naive time
bob,2,m3,yesterday,not a time
ann,1,m3,2026-03-01T11:59:00Z,
"""


def registered(view: object) -> RegisteredView:
    return RegisteredView(view, 1, "test", datetime.now(UTC))  # type: ignore[arg-type]


def test_import_reports_bad_rows_and_loads_good_ones(
    settings: Settings, topic: str, tmp_path: Path
) -> None:
    path = tmp_path / "history.csv"
    path.write_text(CSV)
    view = make_view(topic)

    report = import_events(settings, registered(view), path, online=True)

    assert (report.read, report.imported) == (8, 4)
    reasons = dict(report.rejected)
    assert reasons[3].startswith("wrong_type: 'amount'")
    assert reasons[4].startswith("missing_field: 'user_id'")
    assert "no UTC offset" in reasons[5]
    assert "not ISO 8601" in reasons[6]

    log = OfflineStore(settings.offline).read_events(view.name, 1)
    assert log.num_rows == 4
    assert set(log["_partition"].to_pylist()) == {IMPORT_PARTITION}
    # Offsets follow event time, so the import reads like a partition in order.
    assert log.sort_by("_offset")["amount"].to_pylist() == [1.0, 10.5, 7.0, 4.0]

    as_of = parse_timestamp("2026-03-01T12:05:00Z")
    [[ann, bob]] = read_features(
        OnlineStore(settings.redis), [(view.name, 1, TileLayout(view), ["ann", "bob"])], as_of
    )
    assert ann["amount_sum_10m"].value == 15.5
    assert ann["count_10m"].value == 3
    assert ann["amount_last_2h"].value == 4.0
    assert bob["amount_sum_10m"].value == 7.0

    # A second import continues the offsets: nothing collides with the first.
    again = import_events(settings, registered(view), path)
    assert again.imported == 4
    log = OfflineStore(settings.offline).read_events(view.name, 1)
    assert sorted(log["_offset"].to_pylist()) == list(range(8))


def test_missing_columns_are_named(settings: Settings, topic: str, tmp_path: Path) -> None:
    path = tmp_path / "thin.csv"
    path.write_text("user_id,ts\nann,2026-03-01T12:00:00Z\n")
    from streaming.errors import StreamingError

    with pytest.raises(StreamingError, match=r"lacks the columns \['amount', 'merchant'\]"):
        import_events(settings, registered(make_view(topic)), path)
