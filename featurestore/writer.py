"""The write path: apply decoded events to one view version, exactly once.

Per batch: drop what the version already applied (its stored positions), decide lateness per
partition against the watermark (`featurestore.positions.late_events`), append the applied
events to the offline log, then merge their tile states and move the stored positions in one
atomic Redis call (`OnlineStore.merge_batch`). Redis, not the caller, is the truth for where a
version stands: a batch applied again (a replay after a crash) finds the positions moved and
changes nothing, and positions that moved under the writer (another worker after a rebalance)
make it re-read them and redo the batch. A crash between the log append and the merge writes
those events to the log again on replay; the log's readers see each (partition, offset) once.

The writer knows nothing of Kafka: the ingest worker, `fstore import` and `fstore backfill` all
hand it an `EventBatch`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pyarrow as pa

from featurestore.definitions import FeatureView
from featurestore.errors import FeatureStoreError
from featurestore.events import EventBatch
from featurestore.keys import entity_keys
from featurestore.offline.log import OfflineStore, batch_table
from featurestore.online import BUCKET_FIELD, BUCKET_TILES, OnlineStore
from featurestore.positions import NO_POSITION, Position, late_events
from featurestore.retry import Retry, retry_online
from featurestore.tiles import I64, TileLayout

__all__ = ["Applied", "ViewWriter"]

Moves = dict[int, tuple[Position, Position]]  # partition -> (stored position, new position)
_ATTEMPTS = 20


def _no_rows() -> I64:
    return np.zeros(0, dtype=np.int64)


@dataclass
class Applied:
    """What one `ViewWriter.apply` did."""

    applied: int = 0  # events merged into the online state (and appended to the log)
    late: I64 = field(default_factory=_no_rows)  # batch indexes of the late events
    conflicts: int = 0  # times the positions moved under the writer and the batch was redone


class ViewWriter:
    """Applies event batches to one view version; holds where it stands on each partition.

    `retry` runs every online-store call: by default an outage is waited out forever (a CLI
    command); a consumer passes one that gives up when it is told to stop.
    """

    def __init__(
        self,
        online: OnlineStore,
        offline: OfflineStore,
        view: FeatureView,
        version: int,
        retry: Retry = retry_online,
    ) -> None:
        self.online = online
        self.offline = offline
        self.view = view
        self.version = version
        self.layout = TileLayout(view)
        self.retry = retry
        self.positions: dict[int, Position] = {}

    def load_positions(self) -> dict[int, Position]:
        """Read where this version stands from Redis (the truth), e.g. on a partition assignment."""
        self.positions = self.retry(partial(self.online.positions, self.view.name, self.version))
        return self.positions

    def apply(
        self,
        batch: EventBatch,
        last_offsets: dict[int, int],
        on_late: Callable[[I64], None] | None = None,
    ) -> Applied:
        """Apply `batch` exactly once, moving each partition's position to `last_offsets`.

        `last_offsets` may name offsets past the batch's events (messages that were not
        events): the position moves past them too. `on_late(indexes)` runs before the
        positions move past the late events, so a caller can dead-letter them without a
        crash losing one (it runs again if the batch is redone: at least once).
        """
        done = Applied()
        for _attempt in range(_ATTEMPTS):
            applied, late, moves = self._select(batch, last_offsets)
            if not moves:
                return done  # replayed: this version already has the whole batch
            if on_late is not None and len(late):
                on_late(late)
            keys, ttls, rows, distinct = self._tile_rows(batch, applied, moves)
            self.offline.append(
                self.view.name, self.version, batch_table(self.view.source.schema_, batch, applied)
            )
            conflict = self.retry(
                partial(
                    self.online.merge_batch,
                    self.view.name,
                    self.version,
                    self.layout,
                    keys,
                    ttls,
                    rows,
                    moves,
                    distinct,
                )
            )
            if conflict is None:
                self.positions.update({p: new for p, (_old, new) in moves.items()})
                done.applied, done.late = len(applied), late
                return done
            # Another worker moved this version (a rebalance) or we replayed: re-read and redo.
            done.conflicts += 1
            self.load_positions()
        raise FeatureStoreError(
            f"view {self.view.name} v{self.version}: positions kept changing under this writer "
            f"({_ATTEMPTS} attempts); is another writer replaying the same partitions?"
        )

    def _select(self, batch: EventBatch, last_offsets: dict[int, int]) -> tuple[I64, I64, Moves]:
        """Fresh events of each partition split into applied and late, and the new positions."""
        applied: list[I64] = []
        late: list[I64] = []
        moves: Moves = {}
        for partition, last in last_offsets.items():
            old = self.positions.get(partition, NO_POSITION)
            if last <= old.offset:
                continue  # replayed: this version already has the whole batch of this partition
            index = np.flatnonzero((batch.partition == partition) & (batch.offset > old.offset))
            is_late, watermark = late_events(batch.ts[index], old.watermark, self.view.lateness_us)
            if len(index):
                applied.append(index[~is_late])
                late.append(index[is_late])
            moves[partition] = (old, Position(last, watermark))
        return (
            np.sort(np.concatenate(applied)) if applied else _no_rows(),
            np.concatenate(late) if late else _no_rows(),
            moves,
        )

    def _tile_rows(
        self, batch: EventBatch, applied: I64, moves: Moves
    ) -> tuple[list[str], list[int], np.ndarray, list[tuple[int, str, str, list[str]]]]:
        """The Redis keys, TTLs, tile and bucket state rows and distinct members of `applied`,
        in the form `OnlineStore.merge_batch` takes."""
        layout, view = self.layout, self.view
        if len(applied) == 0:
            return [], [], np.zeros((0, layout.width + 2)), []
        taken = applied.tolist()
        names_of_rows = entity_keys(
            {k: [batch.columns[k][i] for i in taken] for k in view.join_keys}, view.join_keys
        )
        entity = pa.array(names_of_rows, pa.string()).dictionary_encode()
        codes = entity.indices.to_numpy().astype(np.int64)
        names: list[str] = entity.dictionary.to_pylist()
        ts = batch.ts[applied]
        tile = ts // layout.tile_us
        bucket = tile // BUCKET_TILES
        partition, offset = batch.partition[applied], batch.offset[applied]
        columns = {
            c: np.asarray(batch.columns[c], dtype=np.float64)[applied] for c in layout.columns
        }

        _bucket_ids, bucket_first, bucket_group = _groups(codes, bucket)
        _tile_ids, tile_first, tile_group = _groups(codes, tile)
        keys = [f"{names[codes[i]]}:{bucket[i]}" for i in bucket_first]
        key_of_tile_group = bucket_group[tile_first]

        tile_states = layout.reduce(tile_group, len(tile_first), ts, partition, offset, columns)
        bucket_states = layout.reduce(
            bucket_group, len(bucket_first), ts, partition, offset, columns
        )
        rows = np.empty((len(tile_first) + len(bucket_first), layout.width + 2))
        n = len(tile_first)
        rows[:n, 0] = key_of_tile_group
        rows[:n, 1] = tile[tile_first] - bucket[tile_first] * BUCKET_TILES
        rows[:n, 2:] = tile_states
        rows[n:, 0] = np.arange(len(bucket_first))
        rows[n:, 1] = -1
        rows[n:, 2:] = bucket_states

        # A key lives while some window can still reach its bucket by the stream's own clock,
        # and at least one longest window (+ lateness) of wall time, so replays stay readable.
        watermark = max(new.watermark for _old, new in moves.values())
        keep = view.max_window_us + view.lateness_us
        bucket_end = (bucket[bucket_first] + 1) * BUCKET_TILES * layout.tile_us
        ttls = (np.maximum(bucket_end + keep - watermark, 0) + keep) // 1000

        distinct: list[tuple[int, str, str, list[str]]] = []
        tile_fields = [str(int(f)) for f in rows[:n, 1]]
        for column in layout.distinct_columns:
            values = batch.columns[column]
            per_tile: dict[int, set[str]] = {}
            per_bucket: dict[int, set[str]] = {}
            for row, event in enumerate(taken):
                text = str(values[event])
                per_tile.setdefault(int(tile_group[row]), set()).add(text)
                per_bucket.setdefault(int(bucket_group[row]), set()).add(text)
            for group, members in per_tile.items():
                key = int(key_of_tile_group[group])
                distinct.append((key, tile_fields[group], column, sorted(members)))
            for group, members in per_bucket.items():
                distinct.append((group, BUCKET_FIELD, column, sorted(members)))
        return keys, [int(t) for t in ttls], rows, distinct


def _groups(codes: I64, values: I64) -> tuple[I64, I64, I64]:
    """Group rows by (entity code, value): ids, first row of each group, group of each row."""
    span = int(values.max() - values.min()) + 1
    composite = codes * span + (values - values.min())
    ids, first, group = np.unique(composite, return_index=True, return_inverse=True)
    return ids, first, group.astype(np.int64)
