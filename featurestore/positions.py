"""Where a consumer of a Kafka partition stands, and the rule that says which events are late.

Both the feature writer and the drift monitor keep, per partition, the last offset they applied
and the partition's watermark, the newest event time among the events they applied or rejected
as late; Redis stores both with the state they describe, so a replay finds them where it left.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NO_POSITION", "Position", "PositionConflict"]


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
