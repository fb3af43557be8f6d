"""Nothing a producer sends stops ingestion: every message is applied or dead-lettered with the
reason docs/semantics.md gives it, and whatever decode accepts goes through the real writer
(Redis merge, Parquet log) without an error.

The hypothesis tests drive `decode` -> `ViewWriter.apply` with fake messages (decode reads only
`value`, `partition` and `offset`) into real Redis and a real offline log; the last tests send
poison through real Kafka to the worker and read the dead-letter topic back.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from featurestore.config import OfflineSettings, Settings
from featurestore.events import check_value
from featurestore.offline.log import OfflineStore
from featurestore.online import OnlineStore, read_features
from featurestore.tiles import TileLayout
from featurestore.timestamps import MAX_US, to_us
from featurestore.writer import ViewWriter
from streaming.ingest.decode import MAX_MESSAGE_BYTES, decode
from streaming.ingest.worker import Worker
from tests.streaming.conftest import make_view, publish
from tests.streaming.ingest.poison import (
    NOW_US,
    SCHEMA,
    FakeMessage,
    as_bytes,
    events,
    expected_reason,
    poison_view,
)
from tests.streaming.ingest.test_crash import dead_letters

pytestmark = pytest.mark.integration

REASONS = {
    "malformed_json",
    "oversized",
    "missing_field",
    "wrong_type",
    "out_of_range",
    "bad_timestamp",
    "future",
}
_versions = itertools.count(1)


def messages_of(payloads: list[bytes | None]) -> list[FakeMessage]:
    """Fake messages on two partitions, offsets ascending in each."""
    return [FakeMessage(p, (i % 2, i // 2)) for i, p in enumerate(payloads)]


def apply_everything(settings_: Settings, payloads: list[bytes | None]) -> tuple[Any, Any]:
    """decode, then the real writer on a fresh view version; returns (decoded, applied)."""
    view = poison_view("poison")
    messages = messages_of(payloads)
    decoded = decode(messages, view.source, now_us=NOW_US)  # type: ignore[arg-type]
    assert len(decoded) + len(decoded.rejected) == len(messages)
    assert {r.reason for r in decoded.rejected} <= REASONS
    for rejected in decoded.rejected:
        assert len(rejected.detail) < 400, rejected.detail  # it travels in a Kafka header
    version = next(_versions)
    writer = ViewWriter(
        OnlineStore(settings_.redis), OfflineStore(settings_.offline), view, version
    )
    writer.load_positions()
    last: dict[int, int] = {}
    for message in messages:
        last[message.partition()] = message.offset()
    applied = writer.apply(decoded.events, last)
    assert applied.applied + len(applied.late) == len(decoded)
    if len(decoded):
        users = sorted({str(u) for u in decoded.events.columns["user_id"]})
        layout = TileLayout(view)
        [rows] = read_features(
            OnlineStore(settings_.redis), [(view.name, version, layout, users)], NOW_US
        )
        assert len(rows) == len(users)
    if applied.applied:
        log = OfflineStore(settings_.offline).read_events(view.name, version)
        assert log.num_rows == applied.applied
    return decoded, applied


@pytest.fixture
def store_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"offline": OfflineSettings(root=tmp_path / "log")})


@hsettings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(events(), min_size=1, max_size=12))
@example(
    [
        {"user_id": "u1", "n": 1, "amount": 9007199254740993, "flag": True,
         "seen": "2026-01-01T00:00:00Z", "ts": "2026-03-01T11:59:00Z"},
        {"user_id": "u1", "n": 2**63, "amount": 1.0, "flag": True,
         "seen": "2026-01-01T00:00:00Z", "ts": "2026-03-01T11:59:00Z"},
        {"user_id": "u1", "n": 1, "amount": 1.0, "flag": True,
         "seen": 1772366400000, "ts": 9_300_000_000_000_000},
        {"user_id": "u1", "n": 1, "amount": True, "flag": True,
         "seen": 1772366400000, "ts": "9999-12-31T23:59:59Z"},
        {"user_id": "u1", "n": 1, "amount": 1e308, "flag": False,
         "seen": 1772366400000, "ts": "2026-03-01T11:58:00Z"},
        {"user_id": "u1", "n": -(2**63), "amount": -1e308, "flag": False,
         "seen": 1772366400000, "ts": "2026-03-01T11:57:00Z"},
        {"user_id": "u1", "n": 1, "amount": 1.0, "flag": False,
         "seen": "2027-03-01T12:00:00Z", "ts": "2027-03-01T12:00:00Z"},
    ]
)  # fmt: skip
def test_every_event_gets_its_documented_outcome_and_the_writer_takes_every_accepted_one(
    store_settings: Settings, batch: list[dict[str, Any]]
) -> None:
    decoded, _applied = apply_everything(store_settings, [as_bytes(e) for e in batch])
    reasons: dict[int, str | None] = dict.fromkeys(range(len(batch)))
    for rejected in decoded.rejected:
        partition, offset = rejected.message.where
        reasons[offset * 2 + partition] = rejected.reason
    assert [reasons[i] for i in range(len(batch))] == [expected_reason(e) for e in batch]
    for name, kind in SCHEMA.items():
        for value in decoded.events.columns[name]:
            if kind == "timestamp":  # kept as the text the producer sent
                assert type(value) is str
            else:
                assert check_value(kind, value) is None  # type: ignore[arg-type]
    assert ((decoded.events.ts >= 0) & (decoded.events.ts < MAX_US)).all()


@hsettings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(st.none() | st.binary(max_size=60), min_size=1, max_size=12))
@example([b"", b"{", b"[1]", b"null", b"NaN", b'{"ts": 1e400}', b"\xed\xa0\x80", b'"\\ud800"'])
def test_arbitrary_bytes_are_dead_lettered_and_never_raise(
    store_settings: Settings, payloads: list[bytes | None]
) -> None:
    decoded, _applied = apply_everything(store_settings, list(payloads))
    assert len(decoded) == 0  # 60 bytes cannot hold a whole event


def test_large_but_allowed_values_go_through_and_oversized_ones_do_not(
    store_settings: Settings,
) -> None:
    good = {"n": 1, "amount": 1.0, "flag": True, "seen": 1772366400000, "ts": 1772366400000}
    big_user = {**good, "user_id": "u" * (MAX_MESSAGE_BYTES - 200)}
    too_big = {**good, "user_id": "u" * MAX_MESSAGE_BYTES}
    deep = b'{"user_id": ' + b"[" * 1023 + b"]" * 1023 + b"}"  # orjson's deepest
    deepest = b'{"user_id": ' + b"[" * 1100 + b"]" * 1100 + b"}"
    decoded, applied = apply_everything(
        store_settings, [as_bytes(big_user), as_bytes(too_big), deep, deepest]
    )
    assert applied.applied == 1
    assert [r.reason for r in decoded.rejected] == ["oversized", "wrong_type", "malformed_json"]


# -- through real Kafka and the worker -----------------------------------------------------


def wait_consumed(worker: Worker, count: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while worker.counters.consumed < count:
        assert time.monotonic() < deadline, f"consumed {worker.counters.consumed} of {count}"
        time.sleep(0.1)


def test_an_event_a_year_ahead_is_dead_lettered_as_future_and_the_current_ones_applied(
    settings: Settings, topic: str, run_worker: Callable[..., Worker]
) -> None:
    """The issue's reproduction: before, the one future event raised the watermark and the 100
    current events after it on its partition were all dead-lettered as late."""
    now = datetime.now(UTC)
    ahead = {"user_id": "u1", "amount": 1.0, "merchant": "m", "ts": (now + timedelta(days=365))}
    current = [
        {"user_id": "u1", "amount": 1.0, "merchant": "m", "ts": now - timedelta(seconds=100 - i)}
        for i in range(100)
    ]
    payloads: list[tuple[bytes, bytes | None]] = [
        (orjson.dumps({**e, "ts": e["ts"].isoformat()}), b"u1") for e in [ahead, *current]
    ]
    where = publish(settings.kafka, topic, payloads)
    assert len({p for p, _ in where}) == 1  # one key, one partition

    view = make_view(topic)
    worker = Worker(settings, [(view, 1)], group=f"{topic}.g", batch_size=500)
    run_worker(worker, lambda w: w.counters.consumed >= len(payloads))
    wait_consumed(worker, len(payloads))

    assert (worker.counters.applied, worker.counters.late) == (100, 0)
    assert worker.counters.dead_lettered == 1
    assert dead_letters(settings.kafka, topic) == [("future", *where[0])]
    [[features]] = read_features(
        OnlineStore(settings.redis), [(view.name, 1, TileLayout(view), ["u1"])], to_us(now)
    )
    assert features["count_1h"].value == 100


POISON: list[tuple[bytes, str]] = [
    (b'"amount": 9007199254740993', "out_of_range"),
    (b'"amount": -9007199254740993', "out_of_range"),
    (b'"amount": 18446744073709551615', "out_of_range"),
    (b'"amount": 1e400', "malformed_json"),
    (b'"amount": NaN', "malformed_json"),
    (b'"amount": true', "wrong_type"),
    (b'"amount": [1.0]', "wrong_type"),
    (b'"amount": {"value": 1.0}', "wrong_type"),
    (b'"n": 9223372036854775808', "out_of_range"),
    (b'"n": -9223372036854775809', "wrong_type"),  # orjson reads it as a float
    (b'"n": 1.0', "wrong_type"),
    (b'"flag": 1', "wrong_type"),
    (b'"user_id": 7', "wrong_type"),
    (b'"ts": 9300000000000000', "out_of_range"),
    (b'"ts": "9999-12-31T23:59:59Z"', "out_of_range"),
    (b'"ts": "0001-01-01T00:00:00Z"', "out_of_range"),
    (b'"ts": -1', "out_of_range"),
    (b'"ts": 1772366400000.0', "bad_timestamp"),
    (b'"ts": true', "bad_timestamp"),
    (b'"ts": "2026-03-01T12:00:00"', "bad_timestamp"),
    (b'"seen": 99999999999999999', "out_of_range"),
    (b'"seen": 1.5', "wrong_type"),
    (b'"seen": "soon"', "bad_timestamp"),
]


def test_poison_mixed_with_good_events_is_dead_lettered_with_its_reason(
    settings: Settings, topic: str, run_worker: Callable[..., Worker]
) -> None:
    good = {
        "user_id": "u1",
        "n": 2**63 - 1,  # int64's largest: kept exactly in the log
        "amount": 2**53,
        "flag": True,
        "seen": 1772366400000,  # epoch ms in a timestamp column: kept as its text
        "ts": "2026-03-01T12:00:00Z",
    }
    template = orjson.dumps({k: v for k, v in good.items() if k != "amount"})
    payloads: list[tuple[bytes, bytes | None]] = []
    poison: dict[bytes, str] = {}
    for i, (field, reason) in enumerate(POISON):
        name = field.split(b":")[0]
        body = {k: v for k, v in good.items() if f'"{k}"'.encode() != name}
        value = orjson.dumps(body)[:-1] + b", " + field + b"}"
        poison[value] = reason
        payloads.append((orjson.dumps({**good, "amount": float(i)}), b"u1"))
        payloads.append((value, b"u1"))
    payloads.append((template, b"u1"))  # no amount at all
    poison[template] = "missing_field"
    publish(settings.kafka, topic, payloads)

    view = poison_view(topic)
    worker = Worker(settings, [(view, 1)], group=f"{topic}.g", batch_size=1_000)
    run_worker(worker, lambda w: w.counters.consumed >= len(payloads))
    wait_consumed(worker, len(payloads))

    assert worker.counters.applied == len(POISON)
    assert worker.counters.dead_lettered == len(poison)
    found = Counter(reason for reason, _p, _o in dead_letters(settings.kafka, topic))
    assert found == Counter(poison.values())
    log = OfflineStore(settings.offline).read_events(view.name, 1)
    assert set(log["n"].to_pylist()) == {2**63 - 1}
    assert set(log["seen"].to_pylist()) == {"1772366400000"}
    assert sorted(log["amount"].to_pylist()) == [float(i) for i in range(len(POISON))]
