"""The offline log: durable appends, orphan temp files, quarantine, streaming reads."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path, PurePath

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurestore.config import OfflineSettings
from featurestore.offline import durable
from featurestore.offline.historical import QUARANTINED_KEY, HistoricalQuery
from featurestore.offline.log import OfflineStore
from featurestore.registry import RegisteredView
from tests.featurestore.offline.conftest import OfflineConfig
from tests.featurestore.offline.test_historical import T0, make_view

SECOND = 1_000_000
DAY = 86_400 * SECOND
VIEW = "user_txn"


def log_rows(n: int, start: int = 0, partition: int = 0, seed: int = 0, t0: int = T0) -> pa.Table:
    """`n` events at offsets start.. of `partition`, spread over three days from t0."""
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "user_id": [f"u{i % 7}" for i in range(n)],
            "amount": rng.normal(10, 3, n),
            "merchant": [f"m{i % 3}" for i in range(n)],
            "event_timestamp": pa.array(
                t0 + np.sort(rng.integers(0, 3 * DAY, n)), pa.timestamp("us", tz="UTC")
            ),
            "_partition": pa.array(np.full(n, partition), pa.int32()),
            "_offset": pa.array(np.arange(start, start + n), pa.int64()),
        }
    )


def filled(root: Path | OfflineSettings) -> OfflineStore:
    """A log as a worker leaves it: batches on two partitions, one batch written twice."""
    config = root if isinstance(root, OfflineSettings) else OfflineSettings(root=root)
    store = OfflineStore(config)
    for i in range(6):
        store.append(VIEW, 1, log_rows(40, start=40 * i, partition=i % 2, seed=i))
    store.append(VIEW, 1, log_rows(40, start=40 * 5, partition=1, seed=5))  # a replay
    return store


def entity_rows() -> pa.Table:
    n = 30
    return pa.table(
        {
            "user_id": [f"u{i % 8}" for i in range(n)],
            "event_timestamp": pa.array(
                [T0 + i * 3 * DAY // n for i in range(n)], pa.timestamp("us", tz="UTC")
            ),
        }
    )


def training_set(store: OfflineStore) -> tuple[pa.Table, HistoricalQuery]:
    view = make_view("1h", ["1h", "1d"])
    registered = RegisteredView(view, 1, "test", None)  # type: ignore[arg-type]
    query = HistoricalQuery(store, entity_rows(), [(registered, f) for f in view.feature_names()])
    return query.to_arrow(), query


def sort(table: pa.Table) -> pa.Table:
    return table.sort_by([("_partition", "ascending"), ("_offset", "ascending")])


def test_append_fsyncs_the_file_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src: str | Path, dst: str | Path) -> None:
        calls.append(("rename", str(dst)))
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    store = OfflineStore(OfflineSettings(root=tmp_path))
    [path] = store.append(VIEW, 1, log_rows(5, t0=T0 + 3 * 3600 * SECOND).slice(0, 1))

    rename_at = calls.index(("rename", str(path)))
    written = [i for i, (kind, name) in enumerate(calls) if kind == "fsync" and ".tmp" in name]
    assert written and max(written) < rename_at  # the data is on disk before it has a name
    assert ("fsync", str(path.parent)) in calls[rename_at:]  # and the name is on disk after
    assert ("fsync", str(path.parent.parent)) in calls  # the new date folder's entry too
    assert pq.read_table(path).num_rows == 1


def test_a_write_that_fails_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = OfflineStore(OfflineSettings(root=tmp_path))

    def half_then_fail(table: pa.Table, where: Path) -> None:
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        store.append(VIEW, 1, log_rows(5))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_orphans_of_dead_writers_are_removed_at_the_first_append_and_live_ones_kept(
    tmp_path: Path,
) -> None:
    directory = tmp_path / VIEW / "v1" / "date=2026-01-01"
    directory.mkdir(parents=True)
    target = directory / "x.parquet"
    # A writer killed mid-write: a real process that starts a file and dies without cleanup.
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from featurestore.offline.durable import temp_beside\n"
        "temp = temp_beside(Path(sys.argv[1]))\n"
        "temp.write_bytes(b'PAR1 half')\n"
        "print(temp)\n"
        "os._exit(9)\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", script, str(target)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])},
        check=False,
    )
    assert killed.returncode == 9, killed.stderr
    dead = Path(killed.stdout.strip())
    live_writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = directory / f".{'a' * 32}.{durable._HOST}.{live_writer.pid}.tmp"
        live.write_bytes(b"PAR1 being written")
        mine_gone = durable.temp_beside(target)  # this process, not writing it any more
        mine_gone.write_bytes(b"PAR1")
        old = directory / "0123.tmp"  # the old naming: its writer is unknown, age decides
        old.write_bytes(b"PAR1")
        two_days_ago = time.time() - 2 * 86_400
        os.utime(old, (two_days_ago, two_days_ago))
        recent = directory / "4567.tmp"
        recent.write_bytes(b"PAR1")
        foreign = directory / f".{'b' * 32}.otherhost.1.tmp"
        foreign.write_bytes(b"PAR1")
        store = OfflineStore(OfflineSettings(root=tmp_path))

        store.append(VIEW, 1, log_rows(3))

        left = {p.name for p in directory.iterdir() if p.suffix == ".tmp"}
        assert left == {live.name, recent.name, foreign.name}
        assert not dead.exists() and not mine_gone.exists() and not old.exists()
    finally:
        live_writer.kill()
        live_writer.wait()
    assert not live.exists() or durable.is_orphan(live)  # its writer is gone now


def test_scan_events_streams_what_read_events_returns(offline_config: OfflineConfig) -> None:
    store = filled(offline_config("log"))
    whole = store.read_events(VIEW, 1)
    assert whole.num_rows == 240  # the replayed batch once

    chunks = list(store.scan_events(VIEW, 1, batch_rows=7))

    assert [c.num_rows for c in chunks] == [7] * 34 + [2]
    assert pa.concat_tables(chunks).equals(whole)
    assert list(store.scan_events("nothing", 1)) == []


def test_max_offset_reads_one_partition(offline_config: OfflineConfig) -> None:
    store = filled(offline_config("log"))
    assert store.max_offset(VIEW, 1, 0) == 40 * 4 + 39
    assert store.max_offset(VIEW, 1, 1) == 40 * 5 + 39
    assert store.max_offset(VIEW, 1, -1) is None
    assert store.max_offset("nothing", 1, 0) is None


def bad_files(store: OfflineStore) -> list[PurePath]:
    """A truncated real log file (other events than the log's) and a garbage file, put in the
    log under names no writer would use."""
    sink = pa.BufferOutputStream()
    pq.write_table(log_rows(40, start=10_000, seed=9), sink)
    data = sink.getvalue().to_pybytes()
    directory = store.files(VIEW, 1)[0].parent
    truncated = directory / "truncated.parquet"
    store.storage.write_bytes(truncated, data[: len(data) * 2 // 3])
    garbage = store.files(VIEW, 1)[-1].parent / "garbage.parquet"
    store.storage.write_bytes(garbage, b"this is not parquet " * 50)
    return [truncated, garbage]


def test_unreadable_files_are_quarantined_and_the_training_set_goes_on_without_them(
    offline_config: OfflineConfig, caplog: pytest.LogCaptureFixture
) -> None:
    config = offline_config("log")
    store = filled(config)
    expected, _ = training_set(store)
    events = store.read_events(VIEW, 1)
    bad = bad_files(store)

    with caplog.at_level(logging.WARNING, logger="fstore.offline"):
        result, query = training_set(OfflineStore(config))

    assert result.equals(expected)
    assert sorted(q.path for q in query.quarantined) == sorted(bad)
    moved = result.schema.metadata[QUARANTINED_KEY].decode()
    assert all(str(path) in moved for path in bad)
    for path in bad:
        relative = path.relative_to(store.view_dir(VIEW, 1))
        assert not store.storage.exists(path)
        assert store.storage.exists(store.quarantine_dir(VIEW, 1) / relative)
        assert any(str(path) in r.getMessage() for r in caplog.records)
    assert store.read_events(VIEW, 1).equals(events)


@pytest.mark.parametrize("read", ["read_events", "scan_events", "max_offset"])
def test_every_log_read_quarantines(offline_config: OfflineConfig, read: str) -> None:
    store = filled(offline_config("log"))
    events = store.read_events(VIEW, 1)
    bad = bad_files(store)

    if read == "read_events":
        assert store.read_events(VIEW, 1).equals(events)
    elif read == "scan_events":
        assert pa.concat_tables(store.scan_events(VIEW, 1, 100)).equals(events)
    else:
        assert store.max_offset(VIEW, 1, 1) == 239

    assert sorted(q.path for q in store.quarantined) == sorted(bad)


def test_a_file_of_another_schema_is_quarantined(offline_config: OfflineConfig) -> None:
    config = offline_config("log")
    store = filled(config)
    expected, _ = training_set(store)
    directory = store.files(VIEW, 1)[0].parent
    # First in DuckDB's listing, so its columns become the query's: `amount` is unknown.
    stray = directory / "0000-stray.parquet"
    with store.storage.writing(stray) as temp:
        pq.write_table(log_rows(10, start=5_000).drop_columns(["amount"]), temp)

    result, query = training_set(OfflineStore(config))

    assert result.equals(expected)
    assert [q.path for q in query.quarantined] == [stray]
    assert "amount" in query.quarantined[0].reason


def test_a_query_error_that_is_no_file_s_fault_is_raised(offline_config: OfflineConfig) -> None:
    store = filled(offline_config("log"))
    files = store.files(VIEW, 1)
    with pytest.raises(duckdb.BinderException, match="nope"):
        store.read_sql(VIEW, 1, "SELECT nope FROM log")
    assert store.quarantined == []
    assert store.files(VIEW, 1) == files


def test_a_read_whose_file_vanished_under_it_runs_again(tmp_path: Path) -> None:
    """A compaction removed an input between DuckDB's listing and its read: nothing is bad."""
    store = filled(tmp_path)
    gone = store.files(VIEW, 1)[0].with_name("compacted-away.parquet")
    calls: list[int] = []

    def run() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise duckdb.IOException(f'Cannot open file "{gone}": No such file or directory')
        return "read"

    assert store.guard([(VIEW, 1)], run) == ("read", [])
    assert len(calls) == 2 and store.quarantined == []
