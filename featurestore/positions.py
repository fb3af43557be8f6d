"""Where a consumer of a Kafka partition stands, and the rule that says which events are late.

Both the feature writer and the drift monitor keep, per partition, the last offset they applied
and the partition's watermark, the newest event time among the events they applied or rejected
as late; Redis stores both with the state they describe, so a replay finds them where it left.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["NO_POSITION", "Position", "PositionConflict", "late_events"]


@dataclass(frozen=True)
class Position:
    """Where a view (or the monitor) stands on one partition: last applied offset, watermark."""

    offset: int  # -1: nothing applied yet
    watermark: int  # newest event time seen, microseconds; -2**62 before any event


NO_POSITION = Position(-1, -(2**62))


@dataclass(frozen=True)
class PositionConflict:
    """Why an atomic batch write changed nothing: a partition's stored position is not the one
    the batch started from (another consumer moved it after a rebalance, or the batch is a
    replay). The writer re-reads the positions and redoes the batch from there."""

    partition: int
    stored_offset: int  # -1: none stored
    topic: str | None = None  # set where one store keeps positions of several topics


def late_events(
    ts: npt.NDArray[np.int64],
    watermark: int,
    lateness_us: int | None,
    closed_before: int | None = None,
) -> tuple[npt.NDArray[np.bool_], int]:
    """Which of one partition's fresh events (in offset order) are late, and its new watermark.

    The watermark before an event is the newest event time of the partition's earlier events
    (starting from the stored `watermark`); the event is late when its time is more than
    `lateness_us` before that. Deciding against the watermark *before each event*, not at the
    end of the batch, makes the outcome independent of how the stream was cut into batches.
    With `closed_before`, an event older than it is late too (its window was already reported;
    the monitor's rule). `lateness_us=None`: nothing is late (labels wait for their
    predictions however late). Late events still count for the new watermark; being older
    than it, they never move it.

    >>> ts = np.array([100, 60, 75, 130, 99])
    >>> late, watermark = late_events(ts, watermark=90, lateness_us=30)
    >>> late.tolist(), watermark
    ([False, True, False, False, True], 130)
    >>> late_events(ts, watermark=90, lateness_us=30, closed_before=80)[0].tolist()
    [False, True, True, False, True]
    >>> late_events(ts, watermark=90, lateness_us=None)[0].tolist()
    [False, False, False, False, False]
    """
    if not len(ts):
        return np.zeros(0, dtype=bool), watermark
    new_watermark = max(watermark, int(ts.max()))
    if lateness_us is None:
        return np.zeros(len(ts), dtype=bool), new_watermark
    before = np.maximum.accumulate(np.concatenate(([watermark], ts[:-1])))
    late = ts < before - lateness_us
    if closed_before is not None:
        late |= ts < closed_before
    return late, new_watermark
