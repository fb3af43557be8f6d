"""One batch of the monitor, before it goes to Redis: which records are fresh, which are late,
where each partition moves to, and the window accumulators of the rest.

Lateness is the feature writer's rule (`featurestore.positions.late_events`): per partition,
against the watermark before each record, so whether a record counts does not depend on how
the stream was cut into batches. A record in a window that is already closed is late too (a
partition seen for the first time may bring old times).

Windows close by the stream's watermark (`stream_watermark`): the lowest of its partitions',
so none of them can still bring a record that is not late into a closed window. A partition
with no new record for `monitor.idle_timeout` (`Idleness`) stops holding it back: one idle
partition would otherwise stall every window forever. The trade-off: a record that partition
brings later, into a window closed meanwhile, counts as late.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

import numpy as np
from confluent_kafka import Message

from featurestore.drift.accumulator import accumulate_groups
from featurestore.positions import NO_POSITION, Position, late_events
from featurestore.tiles import I64
from streaming.monitor.records import Predictions
from streaming.monitor.references import References

__all__ = ["Idleness", "Moves", "accumulators", "move_rejected", "select", "stream_watermark"]

Moves = dict[tuple[str, int], tuple[Position, Position]]
Positions = dict[tuple[str, int], Position]


def select(
    positions: Positions,
    topic: str,
    ts: I64,
    partition: I64,
    offset: I64,
    moves: Moves,
    lateness_us: int | None,
    closed: int | None = None,
) -> tuple[I64, I64]:
    """Fresh records (offset past the stored position) split into kept and late (none are
    late when `lateness_us` is None); each partition's move goes into `moves`."""
    kept: list[I64] = []
    late: list[I64] = []
    for p in np.unique(partition).tolist():
        old = positions.get((topic, p), NO_POSITION)
        index = np.flatnonzero((partition == p) & (offset > old.offset))
        if not len(index):
            continue
        is_late, watermark = late_events(ts[index], old.watermark, lateness_us, closed)
        kept.append(index[~is_late])
        late.append(index[is_late])
        moves[(topic, p)] = (old, Position(int(offset[index].max()), watermark))
    empty = np.zeros(0, dtype=np.int64)
    return (
        np.sort(np.concatenate(kept)) if kept else empty,
        np.concatenate(late) if late else empty,
    )


def move_rejected(positions: Positions, topic: str, batch: Sequence[Message], moves: Moves) -> None:
    """Move partitions past messages that were not records (dead-lettered, unmonitored)."""
    for message in batch:
        key = (topic, message.partition() or 0)
        offset = message.offset() or 0
        old, new = moves.get(key, (positions.get(key, NO_POSITION),) * 2)
        if offset > new.offset:
            moves[key] = (old, Position(offset, new.watermark))


def accumulators(
    predictions: Predictions, kept: I64, references: References, window_us: int
) -> list[tuple[int, str, np.ndarray]]:
    """(window start, field, accumulator) of every column of every series in the kept rows."""
    out: list[tuple[int, str, np.ndarray]] = []
    if not len(kept):
        return out
    series = predictions.series[kept]
    for s in np.unique(series).tolist():
        model, version, role = predictions.keys[s]
        reference = references.get(model, version)
        if reference is None:
            continue
        rows = kept[series == s]
        # None (a missing feature) becomes NaN here.
        matrix = np.array(predictions.rows[s], dtype=np.float64)[predictions.position[rows]]
        starts = predictions.ts[rows] // window_us * window_us
        windows, groups = np.unique(starts, return_inverse=True)
        for j, ((kind, column), profile) in enumerate(reference.columns.items()):
            vectors = accumulate_groups(profile["edges"], matrix[:, j], groups, len(windows))
            name = f"{model}|{version}|{role}|{kind}|{column}"
            out += [(int(w), name, vectors[g]) for g, w in enumerate(windows.tolist())]
    return out


def stream_watermark(
    marks: Mapping[int, int], partitions: Iterable[int], idle: Collection[int]
) -> int | None:
    """The watermark windows close by: the lowest of the partitions not idle (None while one
    of them has no record yet); once every partition is idle, the highest.

    >>> stream_watermark({0: 50, 1: 10}, [0, 1], idle=[])
    10
    >>> stream_watermark({0: 50, 1: 10}, [0, 1], idle=[1])
    50
    >>> stream_watermark({0: 50}, [0, 1], idle=[]) is None  # partition 1 may bring anything
    True
    >>> stream_watermark({0: 50}, [0, 1], idle=[1])
    50
    >>> stream_watermark({0: 50, 1: 10}, [0, 1], idle=[0, 1])
    50
    """
    active = [p for p in partitions if p not in idle]
    if any(p not in marks for p in active):
        return None
    if active:
        return min(marks[p] for p in active)
    return max(marks.values(), default=None)


class Idleness:
    """Which partitions have shown no new record for `timeout_s`, by this process's clock.

    A partition is quiet while its stored offset does not move; the clock starts when this
    monitor first looks (its start, for a partition without a record). Whether the quiet
    partition really is idle (Kafka has nothing past that offset, not a worker behind or
    gone) is the caller's check (`Monitor`).

    >>> now = [0.0]
    >>> idleness = Idleness(60, clock=lambda: now[0])
    >>> idleness.quiet({0: 5}, [0, 1])
    []
    >>> now[0] = 59.0
    >>> idleness.quiet({0: 9}, [0, 1])
    []
    >>> now[0] = 61.0
    >>> idleness.quiet({0: 9}, [0, 1])
    [1]
    """

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self.clock = clock
        self.started = clock()
        self._moved: dict[int, tuple[int, float]] = {}  # partition -> (offset, since when)

    def quiet(self, offsets: Mapping[int, int], partitions: Iterable[int]) -> list[int]:
        """The partitions whose offset (-1: none yet) has not moved for the timeout."""
        now = self.clock()
        out = []
        for p in partitions:
            offset = offsets.get(p, -1)
            last = self._moved.get(p)
            if last is None or last[0] != offset:
                last = (offset, self.started if last is None else now)
                self._moved[p] = last
            if now - last[1] >= self.timeout_s:
                out.append(p)
        return out
