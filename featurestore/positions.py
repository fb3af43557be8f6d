"""Where a consumer of a Kafka partition stands, and the rule that says which events are late.

Both the feature writer and the drift monitor keep, per partition, the last offset they applied
and the partition's watermark, the newest event time among the events they applied or rejected
as late; Redis stores both with the state they describe, so a replay finds them where it left.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NO_POSITION", "Position"]


@dataclass(frozen=True)
class Position:
    """Where a view (or the monitor) stands on one partition: last applied offset, watermark."""

    offset: int  # -1: nothing applied yet
    watermark: int  # newest event time seen, microseconds; -2**62 before any event


NO_POSITION = Position(-1, -(2**62))
