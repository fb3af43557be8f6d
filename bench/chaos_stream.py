"""The chaos benchmark's stream: its feature view, good events mixed with every kind of poison
message (each with the dead-letter reason it must get), and a publisher that produces them at a
steady rate while the broker is restarted under it, recording where each message landed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
from confluent_kafka import KafkaError, Message, Producer

from featurestore.config import KafkaSettings
from featurestore.definitions import (
    Aggregation,
    Entity,
    FeatureView,
    Function,
    KafkaSource,
    ValueType,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "POISON",
    "TILE_MS",
    "Publisher",
    "Stream",
    "make_stream",
    "make_view",
]

TILE_MS = 60_000
MAX_MESSAGE_BYTES = 2_000_000  # the source topic's max.message.bytes: room for the oversized
OVERSIZED_BYTES = 1_000_001  # one byte past what the worker decodes (streaming.ingest.decode)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def make_view(name: str, topic: str) -> FeatureView:
    """Every function but the approximate one, over a float64 and an int64 column."""
    source = KafkaSource(
        name=f"{name}_events",
        topic=topic,
        timestamp_field="ts",
        schema={"user_id": ValueType.STRING, "amount": ValueType.FLOAT64, "seq": ValueType.INT64},
    )
    amount = "amount"
    return FeatureView(
        name=name,
        entities=[Entity(name="user", join_keys=["user_id"])],
        source=source,
        tile="1m",
        allowed_lateness="5m",
        aggregations=[
            Aggregation(function=Function.COUNT, windows=["10m", "1h"]),
            Aggregation(column=amount, function=Function.SUM, windows=["10m", "1h"]),
            Aggregation(column=amount, function=Function.MEAN, windows=["1h"]),
            Aggregation(column=amount, function=Function.MIN, windows=["1h"]),
            Aggregation(column=amount, function=Function.MAX, windows=["10m", "1h"]),
            Aggregation(column=amount, function=Function.LAST, windows=["1h"]),
            Aggregation(column="seq", function=Function.SUM, windows=["1h"]),
        ],
    )


def _iso(ms: int) -> str:
    return (EPOCH + timedelta(milliseconds=ms)).isoformat()


def _good(user: str, ms: int, seq: int) -> dict[str, object]:
    return {"user_id": user, "amount": 12.5, "seq": seq, "ts": _iso(ms)}


def _json(body: dict[str, object], **fields: bytes) -> bytes:
    """`body` as JSON with `fields` spliced in as raw JSON text (numbers no encoder writes)."""
    text = orjson.dumps({k: v for k, v in body.items() if k not in fields})[:-1]
    for name, raw in fields.items():
        text += b"," + orjson.dumps(name) + b":" + raw
    return text + b"}"


# Every kind of poison message, as (kind, the reason it must be dead-lettered with, its bytes
# from (a good body, the wall clock in ms)). The list: malformed JSON, a missing field, a
# wrong type, numbers a column cannot hold (2^53 + 1 in float64, 2^63 in int64), times past the
# range, an event from the future, and a message larger than the worker reads.
POISON: list[tuple[str, str, Callable[[dict[str, object], int], bytes]]] = [
    ("truncated_json", "malformed_json", lambda b, _now: orjson.dumps(b)[:-7]),
    ("nan", "malformed_json", lambda b, _now: _json(b, amount=b"NaN")),
    ("not_an_object", "malformed_json", lambda b, _now: orjson.dumps([b])),
    ("missing_amount", "missing_field", lambda b, _now: _json({**b, "amount": None})),
    (
        "missing_user",
        "missing_field",
        lambda b, _now: _json({k: b[k] for k in b if k != "user_id"}),
    ),
    ("amount_as_text", "wrong_type", lambda b, _now: _json(b, amount=b'"12.50"')),
    ("user_as_number", "wrong_type", lambda b, _now: _json(b, user_id=b"7")),
    ("seq_as_float", "wrong_type", lambda b, _now: _json(b, seq=b"1.5")),
    ("float_past_2_53", "out_of_range", lambda b, _now: _json(b, amount=b"9007199254740993")),
    ("uint64_in_float", "out_of_range", lambda b, _now: _json(b, amount=b"18446744073709551615")),
    ("int_past_2_63", "out_of_range", lambda b, _now: _json(b, seq=b"9223372036854775808")),
    ("ts_year_9999", "out_of_range", lambda b, _now: _json(b, ts=b'"9999-12-31T23:59:59Z"')),
    ("ts_epoch_ms_huge", "out_of_range", lambda b, _now: _json(b, ts=b"9300000000000000")),
    ("ts_naive", "bad_timestamp", lambda b, _now: _json(b, ts=b'"2026-03-01T12:00:00"')),
    ("ts_text", "bad_timestamp", lambda b, _now: _json(b, ts=b'"soon"')),
    (
        "future_year",
        "future",
        lambda b, now: orjson.dumps({**b, "ts": _iso(now + 365 * 86_400_000)}),
    ),
    ("future_hour_ms", "future", lambda b, now: orjson.dumps({**b, "ts": now + 3_600_000})),
    (
        "oversized",
        "oversized",
        lambda b, _now: _json(b, pad=b'"' + b"x" * (OVERSIZED_BYTES - len(_json(b)) - 9) + b'"'),
    ),
]


@dataclass
class Stream:
    """The messages to publish, in order, and what each one is.

    Good event i is message `good_at[i]`; `reason[m]` is the dead-letter reason poison message m
    must get ("" for good events). Event times are wall-clock times of the last `hours` before
    the run began, so that `/v1/predict` scores real values.
    """

    payloads: list[tuple[bytes, bytes]]  # (value, key)
    reason: list[str]
    kind: list[str]
    good_at: np.ndarray  # message index of each good event
    user: np.ndarray  # per good event
    ts_us: np.ndarray
    amount: np.ndarray
    seq: np.ndarray
    users: int

    @property
    def poison(self) -> int:
        return sum(1 for r in self.reason if r)


def make_stream(
    events: int, users: int, poison_every: int, oversized: int, hours: float, seed: int
) -> Stream:
    """`events` good events of `users` users, in time order (each up to 2 s early: none late),
    a fifth of them with the event time as epoch milliseconds rather than text; after every
    `poison_every` of them one poison message, the kinds in turn (`oversized` of those ~1 MB
    messages in all, spread evenly: the rest of their turns go to the other kinds)."""
    rng = np.random.default_rng(seed)
    now_ms = time.time_ns() // 1_000_000
    span_ms = int(hours * 3_600_000)
    ts_ms = (
        now_ms - span_ms + np.arange(events) * span_ms // events - rng.integers(0, 2_000, events)
    )
    user = rng.integers(0, users, events)
    amount = np.round(rng.gamma(2.0, 25.0, events), 2)
    seq = np.arange(events, dtype=np.int64)
    as_ms = rng.random(events) < 0.2
    poison_slots = events // poison_every
    big = (
        set(np.linspace(0, poison_slots - 1, oversized).astype(int).tolist())
        if oversized
        else set()
    )
    small = [p for p in POISON if p[0] != "oversized"]
    oversized_kind = next(p for p in POISON if p[0] == "oversized")
    payloads: list[tuple[bytes, bytes]] = []
    reason: list[str] = []
    kind: list[str] = []
    good_at = np.empty(events, dtype=np.int64)
    slot = 0
    for i in range(events):
        key = f"u{user[i]:05d}"
        body: dict[str, object] = {
            "user_id": key,
            "amount": float(amount[i]),
            "seq": int(seq[i]),
            "ts": int(ts_ms[i]) if as_ms[i] else _iso(int(ts_ms[i])),
        }
        good_at[i] = len(payloads)
        payloads.append((orjson.dumps(body), key.encode()))
        reason.append("")
        kind.append("good_epoch_ms" if as_ms[i] else "good")
        if (i + 1) % poison_every == 0:
            name, why, make = oversized_kind if slot in big else small[slot % len(small)]
            template = _good(key, int(ts_ms[i]), int(seq[i]))
            payloads.append((make(template, now_ms), key.encode()))
            reason.append(why)
            kind.append(name)
            slot += 1
    return Stream(payloads, reason, kind, good_at, user, ts_ms * 1000, amount, seq, users)


@dataclass(eq=False)  # a thread: hashed by identity
class Publisher(threading.Thread):
    """Produces a stream's messages at `rate` a second from a thread of its own, keyed by user,
    recording each one's (partition, offset) from its delivery report. The producer is
    idempotent: a broker restarted under it costs a wait, never a duplicate or a gap."""

    kafka: KafkaSettings
    topic: str
    stream: Stream
    rate: float
    partition: np.ndarray = field(init=False)
    offset: np.ndarray = field(init=False)
    errors: list[str] = field(default_factory=list)
    sent: int = 0
    failure: BaseException | None = None

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, name="publisher", daemon=True)
        count = len(self.stream.payloads)
        self.partition = np.full(count, -1, dtype=np.int64)
        self.offset = np.full(count, -1, dtype=np.int64)

    def run(self) -> None:
        try:
            self._publish()
        except BaseException as exc:  # noqa: BLE001 - re-raised by `finish` in the main thread
            self.failure = exc

    def _publish(self) -> None:
        producer = Producer(
            self.kafka.client_config(
                **{
                    "enable.idempotence": True,
                    "linger.ms": 20,
                    "message.max.bytes": MAX_MESSAGE_BYTES + 100_000,
                    "message.timeout.ms": 600_000,  # a broker restart is waited out
                    "log_level": 2,  # not every refused connection while the broker restarts
                }
            )
        )

        def delivered(index: int) -> Callable[[KafkaError | None, Message], None]:
            def report(err: KafkaError | None, msg: Message) -> None:
                if err is not None:
                    self.errors.append(f"message {index}: {err.str()}")
                else:
                    self.partition[index] = msg.partition()
                    self.offset[index] = msg.offset()

            return report

        began = time.monotonic()
        for index, (value, key) in enumerate(self.stream.payloads):
            due = began + index / self.rate
            while (wait := due - time.monotonic()) > 0:
                producer.poll(min(wait, 0.05))
            while True:
                try:
                    producer.produce(self.topic, value, key=key, on_delivery=delivered(index))
                    break
                except BufferError:
                    producer.poll(0.05)
            self.sent = index + 1
            producer.poll(0)
        left = producer.flush(600)
        if left:
            self.errors.append(f"{left} messages still undelivered after 600 s")

    def finish(self, timeout: float) -> None:
        """Wait for the last delivery report; raise if any message was not delivered."""
        self.join(timeout)
        if self.is_alive():
            raise RuntimeError(f"the publisher did not finish within {timeout:g} s")
        if self.failure is not None:
            raise self.failure
        if self.errors:
            raise RuntimeError(f"{len(self.errors)} messages failed: {self.errors[:3]}")
        missing = int((self.offset < 0).sum())
        if missing:
            raise RuntimeError(f"{missing} messages have no delivery report")
