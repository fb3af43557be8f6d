"""A batch of decoded source events: what the writer applies, whatever they came from.

Kafka (`streaming.ingest.decode`), a file import and a replay of the offline log all hand the
writer this one shape, so how events are applied does not depend on where they were read.
Every event carries a (partition, offset): the writer's exactly-once check and the offline
log's dedup both rest on that pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["EventBatch"]


@dataclass
class EventBatch:
    """Events as columns, in consumption order (offsets ascend within each partition).

    `columns` holds the source's fields except its timestamp field, whose value is `ts`
    (epoch microseconds, UTC).

    >>> batch = EventBatch({"user_id": ["u1", "u2"]}, np.array([10, 20]), np.zeros(2, int),
    ...                    np.array([7, 8]))
    >>> len(batch), batch.last_offsets()
    (2, {0: 8})
    """

    columns: dict[str, list[Any]]
    ts: npt.NDArray[np.int64]
    partition: npt.NDArray[np.int64]
    offset: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.ts)

    def last_offsets(self) -> dict[int, int]:
        """The newest offset of each partition in the batch."""
        out: dict[int, int] = {}
        for partition in np.unique(self.partition).tolist():
            out[partition] = int(self.offset[self.partition == partition].max())
        return out
