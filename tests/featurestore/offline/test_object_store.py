"""What only an object store asks of the log: uploads that never completed, names readers must
skip, listings that go stale under a compaction, and errors that must not carry credentials."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path, PurePath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurestore.config import OfflineSettings
from featurestore.errors import OfflineStoreError
from featurestore.offline import compaction
from featurestore.offline.compaction import compact_view
from featurestore.offline.log import OfflineStore
from tests.featurestore.offline.conftest import OfflineConfig
from tests.featurestore.offline.test_log import VIEW, filled, log_rows, sort, training_set

ROOT = Path(__file__).resolve().parents[3]


def test_an_upload_that_never_completed_is_no_object_and_readers_never_see_it(
    s3: Any,
) -> None:
    """A writer killed in the middle of a multipart upload (parts sent, never completed)."""
    config = s3.settings()
    store = filled(config)
    events = store.read_events(VIEW, 1)
    directory = store.files(VIEW, 1)[0].parent
    key = directory / f"{uuid.uuid4().hex}.parquet"
    script = (
        "import os, sys\n"
        "from featurestore.config import OfflineSettings\n"
        "from featurestore.offline.storage import LogStorage\n"
        "storage = LogStorage(OfflineSettings.model_validate_json(sys.stdin.read()))\n"
        "out = storage.fs.open_output_stream(sys.argv[1])\n"
        "out.write(b'PAR1' + os.urandom(24 * 1024 * 1024))  # several parts, uploaded\n"
        "out.flush()\n"
        "print('sent', flush=True)\n"
        "os._exit(9)  # killed before the upload completes\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", script, str(key)],
        input=revealed_json(config),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
        check=False,
    )
    assert killed.returncode == 9 and "sent" in killed.stdout, killed.stderr

    assert not store.storage.exists(key)
    assert key not in store.files(VIEW, 1)
    assert store.read_events(VIEW, 1).equals(events)
    assert store.quarantined == []


def test_temp_and_hidden_names_are_never_read(offline_config: OfflineConfig) -> None:
    store = filled(offline_config("log"))
    events, (expected, _) = store.read_events(VIEW, 1), training_set(store)
    directory = store.files(VIEW, 1)[0].parent
    sink = pa.BufferOutputStream()
    pq.write_table(log_rows(30, start=50_000, seed=3), sink)
    whole = sink.getvalue().to_pybytes()
    # Complete files of events no one committed, under names no reader may take.
    skipped = [
        directory / f".{uuid.uuid4().hex}.otherhost.1.tmp",
        directory / f".{uuid.uuid4().hex}.parquet",
        directory / "upload.parquet.tmp",
    ]
    for path in skipped:
        store.storage.write_bytes(path, whole)

    assert not set(skipped) & set(store.files(VIEW, 1))
    assert store.read_events(VIEW, 1).equals(events)
    assert training_set(store)[0].equals(expected)
    assert store.quarantined == []


def test_a_reader_whose_listing_a_compaction_made_stale_lists_again(
    offline_config: OfflineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inputs deleted between a reader's listing and its read: the read runs again on a fresh
    listing and counts no event twice or never."""
    store = filled(offline_config("log"))
    events = store.read_events(VIEW, 1)
    expected, _ = training_set(store)
    stale = store.files(VIEW, 1)
    compact_view(store, VIEW, 1)
    assert set(stale).isdisjoint(store.files(VIEW, 1))
    real_files = OfflineStore.files
    calls: list[int] = []

    def first_listing_stale(self: OfflineStore, view: str, version: int) -> list[PurePath]:
        calls.append(1)
        return stale if len(calls) == 1 else real_files(self, view, version)

    monkeypatch.setattr(OfflineStore, "files", first_listing_stale)
    assert sort(store.read_events(VIEW, 1)).equals(sort(events))
    assert len(calls) >= 2 and store.quarantined == []
    calls.clear()
    result, query = training_set(store)
    assert result.equals(expected) and query.quarantined == []


def test_every_state_of_a_compaction_reads_the_same(
    offline_config: OfflineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Merged object written, only some inputs deleted: no event counted twice or lost."""
    store = filled(offline_config("log"))
    events = sort(store.read_events(VIEW, 1))
    expected, _ = training_set(store)

    def remove_half(offline: OfflineStore, paths: list[PurePath]) -> None:
        for path in paths[: len(paths) // 2]:
            offline.storage.remove(path)
        raise KeyboardInterrupt("killed mid-delete")

    monkeypatch.setattr(compaction, "_remove", remove_half)
    with pytest.raises(KeyboardInterrupt):
        compact_view(store, VIEW, 1)
    assert sort(store.read_events(VIEW, 1)).equals(events)
    assert training_set(store)[0].equals(expected)
    monkeypatch.undo()
    compact_view(store, VIEW, 1)
    assert sort(store.read_events(VIEW, 1)).equals(events)
    assert training_set(store)[0].equals(expected)


def test_wrong_credentials_fail_clearly_and_never_show_the_secret(
    s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "Wr0ngSecretThatMustNeverBeShown" + uuid.uuid4().hex
    config = s3.settings(s3_secret_key=wrong)
    store = OfflineStore(config)

    with pytest.raises(OfflineStoreError) as raised:
        store.append(VIEW, 1, log_rows(5))
    message = str(raised.value)
    assert s3.bucket in message and "s3_endpoint" in message  # where, and what to check
    assert wrong not in message and s3.secret_key not in message
    assert s3.access_key not in message

    # The same through the AWS_* variables (no key in the settings).
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    from_env = OfflineStore(s3.settings(s3_access_key=None, s3_secret_key=None))
    with pytest.raises(OfflineStoreError) as raised:
        from_env.files(VIEW, 1)
    assert wrong not in str(raised.value) and s3.access_key not in str(raised.value)


def test_an_unreachable_endpoint_is_named(tmp_path: Path) -> None:
    secret = "UnreachableSecret" + uuid.uuid4().hex
    config = OfflineSettings(
        root="s3://bucket/prefix",
        s3_endpoint="http://127.0.0.1:9",  # discard port: nothing listens
        s3_access_key="AKIAEXAMPLEKEY123456",
        s3_secret_key=secret,
        s3_timeout_s=2.0,
    )
    with pytest.raises(OfflineStoreError) as raised:
        OfflineStore(config).append(VIEW, 1, log_rows(3))
    message = str(raised.value)
    assert "s3://bucket/prefix" in message and "offline.s3_endpoint" in message
    assert secret not in message and "AKIAEXAMPLEKEY123456" not in message


def test_settings_refuse_what_is_not_a_folder_or_an_s3_uri() -> None:
    with pytest.raises(ValueError, match="s3://BUCKET/PREFIX"):
        OfflineSettings(root="gs://bucket/x")
    with pytest.raises(ValueError, match="s3://BUCKET/PREFIX"):
        OfflineSettings(root="s3:///no-bucket")
    assert OfflineSettings(root="s3://bucket/a/b/").root == "s3://bucket/a/b"
    assert OfflineSettings(root="s3://bucket/a").on_object_store


def revealed_json(config: OfflineSettings) -> str:
    """The settings as JSON with their secrets (JSON dumps hide them), for a child process."""
    data = config.model_dump(mode="json")
    for name in ("s3_access_key", "s3_secret_key"):
        value = getattr(config, name)
        data[name] = None if value is None else value.get_secret_value()
    return json.dumps(data)
