"""What the chaos benchmark checks after the storm: the accepted events (the good ones, minus any
late by the watermark rule), the offline log against them, every online value against a
brute-force computation over them, and the dead-letter topic against the poison sent.

The brute force is written from docs/semantics.md with numpy, per user and feature: a window of
n tiles at time t holds the events with floor(e/T) >= floor(t/T) - n + 1 and e <= t; `last` is
the value of the newest event, ties broken by the later (partition, offset).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from chaos_stream import Stream
from confluent_kafka import Consumer, TopicPartition

from featurestore.config import KafkaSettings, Settings
from featurestore.definitions import FeatureView, duration_us
from featurestore.offline.log import OfflineStore
from featurestore.online import OnlineStore, read_features
from featurestore.tiles import TileLayout

__all__ = [
    "Accepted",
    "accepted_events",
    "check_dead_letters",
    "check_offline_log",
    "check_online_values",
    "expected_features",
]


@dataclass
class Accepted:
    """The events the view must hold: columns per event, with where Kafka put each one."""

    user: np.ndarray  # user number
    ts_us: np.ndarray
    amount: np.ndarray
    seq: np.ndarray
    partition: np.ndarray
    offset: np.ndarray
    late: int  # good events the watermark rule turns away (dead-lettered as `late`)
    late_at: list[tuple[int, int]]  # their (partition, offset)


def accepted_events(
    stream: Stream, partition: np.ndarray, offset: np.ndarray, lateness_us: int
) -> Accepted:
    """The good events minus the late ones: per partition in offset order, an event is late when
    it is older than the newest event before it by more than the allowed lateness."""
    at = stream.good_at
    p, o = partition[at], offset[at]
    keep = np.ones(len(at), dtype=bool)
    order = np.lexsort((o, p))
    watermark: dict[int, int] = {}
    ts = stream.ts_us
    for i in order.tolist():
        mark = watermark.get(int(p[i]))
        if mark is not None and ts[i] < mark - lateness_us:
            keep[i] = False
            continue
        watermark[int(p[i])] = int(ts[i]) if mark is None else max(mark, int(ts[i]))
    late_at = [(int(p[i]), int(o[i])) for i in np.flatnonzero(~keep).tolist()]
    return Accepted(
        stream.user[keep],
        ts[keep],
        stream.amount[keep],
        stream.seq[keep],
        p[keep],
        o[keep],
        int((~keep).sum()),
        late_at,
    )


def check_offline_log(
    settings: Settings, view: str, version: int, accepted: Accepted
) -> dict[str, int]:
    """The log as its readers see it, against the accepted set, row by row (keyed by `seq`, which
    each good event carries alone): lost, duplicated, wrong (another value or another place),
    unexpected (a row no accepted event explains); and the rows on disk (a batch whose worker was
    killed between the log and the merge is written again; readers keep one)."""
    store = OfflineStore(settings.offline)
    log = store.read_events(view, version)
    raw = store.read_sql(view, version, "SELECT count(*) AS n FROM log")
    on_disk = int(raw["n"][0].as_py()) if raw is not None else 0
    if log.num_rows == 0:
        return {"lost": len(accepted.seq), "duplicated": 0, "log_wrong": 0, "log_unexpected": 0,
                "log_rows": 0, "log_rows_on_disk": on_disk}  # fmt: skip
    seq = log["seq"].to_numpy()
    counts = Counter(seq.tolist())
    duplicated = sum(n - 1 for n in counts.values() if n > 1)
    index = {int(s): i for i, s in enumerate(accepted.seq.tolist())}
    stamps = log["event_timestamp"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
    users = log["user_id"].to_pylist()
    amounts = log["amount"].to_numpy()
    partitions = log["_partition"].to_numpy()
    offsets = log["_offset"].to_numpy()
    wrong = unexpected = 0
    for row, s in enumerate(seq.tolist()):
        i = index.get(int(s))
        if i is None:
            unexpected += 1
            continue
        same = (
            users[row] == f"u{accepted.user[i]:05d}"
            and stamps[row] == accepted.ts_us[i]
            and amounts[row] == accepted.amount[i]
            and partitions[row] == accepted.partition[i]
            and offsets[row] == accepted.offset[i]
        )
        wrong += not same
    lost = len(set(index) - set(counts))
    return {
        "lost": lost,
        "duplicated": duplicated,
        "log_wrong": wrong,
        "log_unexpected": unexpected,
        "log_rows": log.num_rows,
        "log_rows_on_disk": on_disk,
    }


def expected_features(
    view: FeatureView,
    accepted: Accepted,
    users: np.ndarray,
    t_us: int,
    counts: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Every feature of `users` (user numbers) at `t_us`, by brute force: NaN where a function
    of nothing has no value (count and sum of nothing are 0). `counts`, when given, receives
    how many events each feature's window holds."""
    tile = view.tile_us
    out: dict[str, np.ndarray] = {}
    by_user = np.argsort(accepted.user, kind="stable")
    starts = np.searchsorted(accepted.user[by_user], users, side="left")
    ends = np.searchsorted(accepted.user[by_user], users, side="right")
    for agg in view.aggregations:
        for window, name in zip(agg.windows, agg.feature_names(), strict=True):
            n = duration_us(window) // tile
            values = np.full(len(users), np.nan)
            held = np.zeros(len(users), dtype=np.int64)
            for row, (lo, hi) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
                mine = by_user[lo:hi]
                ts = accepted.ts_us[mine]
                inside = mine[(ts // tile >= t_us // tile - n + 1) & (ts <= t_us)]
                values[row] = _aggregate(str(agg.function), agg.column, accepted, inside)
                held[row] = len(inside)
            out[name] = values
            if counts is not None:
                counts[name] = held
    return out


def _aggregate(function: str, column: str | None, accepted: Accepted, inside: np.ndarray) -> float:
    if function == "count":
        return float(len(inside))
    xs = {"amount": accepted.amount, "seq": accepted.seq}[column or ""][inside].astype(np.float64)
    if function == "sum":
        return float(np.sum(xs)) if len(xs) else 0.0
    if not len(xs):
        return float("nan")
    if function == "mean":
        return float(np.mean(xs))
    if function == "min":
        return float(xs.min())
    if function == "max":
        return float(xs.max())
    if function == "last":
        keys = np.lexsort(
            (accepted.offset[inside], accepted.partition[inside], accepted.ts_us[inside])
        )
        return float(xs[keys[-1]])
    raise ValueError(f"the chaos view has no {function}")


def check_online_values(
    settings: Settings, view: FeatureView, version: int, accepted: Accepted, users: int, t_us: int
) -> dict[str, int]:
    """Every feature of every user at `t_us`, read from Redis, against the brute force: how many
    compared, how many differ, and how many have the wrong status (`ok` when the window holds
    an event, `missing` when it holds none: the view has no ttl, and nothing is rebuilding)."""
    numbers = np.arange(users)
    names = [f"u{u:05d}" for u in numbers.tolist()]
    held: dict[str, np.ndarray] = {}
    want = expected_features(view, accepted, numbers, t_us, held)
    store = OnlineStore(settings.redis)
    got: list[dict[str, Any]] = []
    try:
        for low in range(0, users, 1_000):
            [rows] = read_features(
                store, [(view.name, version, TileLayout(view), names[low : low + 1_000])], t_us
            )
            got += rows
    finally:
        store.close()
    compared = wrong = wrong_status = 0
    examples: list[str] = []
    for name, expected in want.items():
        for row, value in enumerate(expected.tolist()):
            feature = got[row][name]
            actual = np.nan if feature.value is None else feature.value
            compared += 1
            if not np.isclose(actual, value, rtol=1e-9, atol=1e-9, equal_nan=True):
                wrong += 1
                if len(examples) < 5:
                    examples.append(f"{names[row]} {name}: {actual} != {value}")
            if feature.status != ("ok" if held[name][row] else "missing"):
                wrong_status += 1
    return {"values_compared": compared, "wrong_values": wrong, "wrong_statuses": wrong_status,
            "wrong_examples": examples}  # type: ignore[dict-item]  # fmt: skip


def read_dead_letters(
    kafka: KafkaSettings, topic: str, timeout: float = 120.0
) -> list[dict[str, str]]:
    """The headers of every record on `<topic>.dlq`."""
    dlq = f"{topic}.dlq"
    consumer = Consumer(
        kafka.client_config(**{"group.id": f"{dlq}.check", "enable.auto.commit": False})
    )
    try:
        partitions = consumer.list_topics(dlq, timeout=30).topics[dlq].partitions
        expected, assignment = 0, []
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(dlq, partition), timeout=30)
            expected += high - low
            assignment.append(TopicPartition(dlq, partition, low))
        consumer.assign(assignment)
        found: list[dict[str, str]] = []
        deadline = time.monotonic() + timeout
        while len(found) < expected and time.monotonic() < deadline:
            for message in consumer.consume(5_000, timeout=0.5):
                if message.error() is not None:
                    continue
                found.append(
                    {k: (v or b"").decode(errors="replace") for k, v in message.headers() or []}
                )
        if len(found) < expected:
            raise RuntimeError(f"read {len(found)} of {expected} dead letters in {timeout:g} s")
        return found
    finally:
        consumer.close()


def check_dead_letters(
    kafka: KafkaSettings,
    topic: str,
    stream: Stream,
    partition: np.ndarray,
    offset: np.ndarray,
    accepted: Accepted,
) -> dict[str, Any]:
    """Every poison message (and late event) on the dead-letter topic with its reason; none of
    the accepted events there. Dead letters are at least once: a record written again by a
    worker killed before its batch's positions moved is counted once."""
    letters = read_dead_letters(kafka, topic)
    reasons: dict[tuple[int, int], set[str]] = {}
    for headers in letters:
        where = (int(headers["source.partition"]), int(headers["source.offset"]))
        reasons.setdefault(where, set()).add(headers["reason"])
    want: dict[tuple[int, int], str] = {}
    for m, reason in enumerate(stream.reason):
        if reason:
            want[(int(partition[m]), int(offset[m]))] = reason
    for where in accepted.late_at:
        want[where] = "late"
    missing = [w for w in want if w not in reasons]
    wrong_reason = [w for w, r in want.items() if w in reasons and reasons[w] != {r}]
    accepted_places = set(zip(accepted.partition.tolist(), accepted.offset.tolist(), strict=True))
    by_kind: Counter[str] = Counter()
    for m, reason in enumerate(stream.reason):
        if reason and (int(partition[m]), int(offset[m])) in reasons:
            by_kind[stream.kind[m]] += 1
    return {
        "dead_letter_records": len(letters),
        "dead_lettered": len(reasons),
        "dead_letters_missing": len(missing),
        "dead_letters_wrong_reason": len(wrong_reason),
        "dead_letters_of_accepted_events": len(accepted_places & set(reasons)),
        "dead_letters_unexplained": len(set(reasons) - set(want)),
        "dead_letter_reasons": dict(Counter(r for rs in reasons.values() for r in rs)),
        "poison_by_kind_in_dlq": dict(by_kind),
    }
