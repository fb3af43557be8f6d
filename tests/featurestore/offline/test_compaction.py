"""Compaction merges a date's small files into one and never changes what queries return."""

from __future__ import annotations

from datetime import date
from pathlib import Path, PurePath

import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from featurestore import cli
from featurestore.config import OfflineSettings
from featurestore.offline import compaction
from featurestore.offline.compaction import compact_due, compact_view
from featurestore.offline.log import OfflineStore
from tests.featurestore.offline.conftest import OfflineConfig
from tests.featurestore.offline.test_log import VIEW, filled, log_rows, sort, training_set


def per_date(store: OfflineStore) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in store.files(VIEW, 1):
        counts[path.parent.name] = counts.get(path.parent.name, 0) + 1
    return counts


def test_results_are_the_same_before_after_and_in_a_crash_between(
    offline_config: OfflineConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = filled(offline_config("log"))
    events, (training, _query) = store.read_events(VIEW, 1), training_set(store)
    raw_rows = store.read_sql(VIEW, 1, "SELECT count(*) AS n FROM log")
    assert raw_rows is not None and raw_rows["n"][0].as_py() == 280  # the replay is there twice
    before = per_date(store)
    assert min(before.values()) >= 5

    # A crash between writing the merged file and removing its inputs: both stay.
    def crash(*args: object) -> None:
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(compaction, "_remove", crash)
    with pytest.raises(KeyboardInterrupt):
        compact_view(store, VIEW, 1)
    assert per_date(store)["date=2026-01-01"] == before["date=2026-01-01"] + 1
    assert sort(store.read_events(VIEW, 1)).equals(sort(events))
    assert training_set(store)[0].equals(training)
    assert list(tmp_path.rglob("*.tmp")) == []
    monkeypatch.undo()

    report = compact_view(store, VIEW, 1)

    assert per_date(store) == dict.fromkeys(before, 1)
    assert sum(c.rows for c in report.compacted) == 240  # each (partition, offset) once
    after = store.read_events(VIEW, 1)
    assert sort(after).equals(sort(events))
    assert after.schema == events.schema
    assert training_set(store)[0].equals(training)
    # The merged file reads back with the types the worker wrote.
    merged = store.files(VIEW, 1)[0]
    assert store.storage.parquet(merged).schema_arrow == log_rows(1).schema
    # Nothing left to do: a single file is never rewritten.
    assert compact_view(store, VIEW, 1).compacted == []
    assert store.files(VIEW, 1)[0] == merged


def test_only_dates_before_the_cutoff_and_with_enough_files(
    offline_config: OfflineConfig,
) -> None:
    store = filled(offline_config("log"))
    before = per_date(store)

    report = compact_view(store, VIEW, 1, before=date(2026, 1, 3), min_files=3)

    assert sorted(c.date for c in report.compacted) == ["2026-01-01", "2026-01-02"]
    assert per_date(store) == {**before, "date=2026-01-01": 1, "date=2026-01-02": 1}
    assert compact_view(store, VIEW, 1, min_files=100).compacted == []
    # The automatic policy: dates before today with many files (these have too few).
    assert compact_due(store, VIEW, 1).compacted == []


def test_an_unreadable_input_is_quarantined_and_the_rest_merged(
    offline_config: OfflineConfig,
) -> None:
    store = filled(offline_config("log"))
    events = store.read_events(VIEW, 1)
    directory = store.files(VIEW, 1)[0].parent
    store.storage.write_bytes(directory / "garbage.parquet", b"not parquet" * 20)

    report = compact_view(store, VIEW, 1)

    assert [q.path.name for q in report.quarantined] == ["garbage.parquet"]
    assert len(store.files(VIEW, 1)) == 3
    assert sort(store.read_events(VIEW, 1)).equals(sort(events))


def test_appends_during_a_compaction_are_kept(
    offline_config: OfflineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = filled(offline_config("log"))
    real_merge = compaction._merge
    late = log_rows(3, start=9_000, partition=2)

    def merge_while_appending(
        offline: OfflineStore, part: PurePath, inputs: list[PurePath]
    ) -> object:
        store.append(VIEW, 1, late)  # a worker writes while the merge runs
        return real_merge(offline, part, inputs)

    monkeypatch.setattr(compaction, "_merge", merge_while_appending)
    compact_view(store, VIEW, 1)

    log = store.read_events(VIEW, 1)
    kept = log.filter(pc.equal(log["_partition"], 2))
    assert kept.num_rows == 3


def offline_env(monkeypatch: pytest.MonkeyPatch, config: OfflineSettings) -> None:
    """The FSTORE_OFFLINE_* variables that point the CLI at `config`'s log."""
    monkeypatch.setenv("FSTORE_OFFLINE_ROOT", str(config.root))
    for name in ("s3_endpoint", "s3_region", "s3_access_key", "s3_secret_key"):
        value = getattr(config, name)
        if value is not None:
            text = value if isinstance(value, str) else value.get_secret_value()
            monkeypatch.setenv(f"FSTORE_OFFLINE_{name.upper()}", text)


def test_cli_compacts_a_view(
    offline_config: OfflineConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = offline_config("offline")
    store = filled(config)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FSTORE_CONFIG", raising=False)
    offline_env(monkeypatch, config)
    monkeypatch.setenv("COLUMNS", "200")

    ran = CliRunner().invoke(
        cli.app, ["compact", VIEW, "--version", "1", "--min-files", "3", "--include-today"]
    )

    assert ran.exit_code == 0, ran.output
    assert "2026-01-01" in ran.output and "2026-01-03" in ran.output
    assert set(per_date(OfflineStore(config)).values()) == {1}
    again = CliRunner().invoke(cli.app, ["compact", VIEW, "--version", "1", "--include-today"])
    assert again.exit_code == 0, again.output
    assert "no date holds 2+ files" in again.output
    assert store.files(VIEW, 1)
