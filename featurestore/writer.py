"""The write path: apply decoded events to one view version, exactly once, and repair its online
state when Redis lost it.

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

State loss. Redis can come back without what was merged into it: restarted without its data or
flushed (empty), or a failover to a replica, or a restart from a snapshot, that lags (an older
state, but a consistent one: each merge is one atomic script, whole in a replica and in the
AOF). The offline log keeps every event the version applied, with its (partition, offset), so
the writer tells "nothing applied yet" from "lost", by these rules (Kafka partitions only; see
the last paragraph):

- At load (`load_positions`: a partition assignment, a CLI start). The log is read first — the
  newest logged offset L[p] of each partition —, Redis after, so a batch merged in between is
  never taken for a loss. Redis lost state when
  * it holds the version's rebuild marker (a rebuild began and did not finish), or
  * this writer saw the version's epoch marker and Redis now holds another one or none, or
  * a stored position is behind the one this writer last saw (positions only move forward), or
  * for some partition L[p] > max(P[p], A[p]), where P[p] is the stored position and A[p] the
    newest offset a writer announced (`TileStore.announce`) before appending a batch to the log.
    A crash between the log append and the merge leaves L[p] <= A[p]: no loss, Kafka replays
    that batch. After a wipe P and A are gone; a lagging replica holds older ones.
- In a merge (Redis lost while the writer runs): the merge script answers `StateLost` when the
  epoch the writer holds is not the stored one or a stored position is behind the expected one
  — and sets the rebuild marker in the same step, so no read in between says `ok`.
- `check_state` runs the epoch and moved-back tests without the log: an idle consumer calls it
  every few seconds, so a loss is repaired before the next batch rather than at it.

Repair (`_rebuild`), loudly: a warning, `rebuilds` counted, and the rebuild marker set in Redis
so reads report `rebuilding` until it is done. The log's events past the stored positions go
through this writer in (partition, offset) order, without being logged again. The log holds
exactly the events the version applied, and an event is late against the watermark before it —
which late events, being older, never moved — so the replay applies every one of them and
ends where the lost state stood: each position at the log's newest offset, the same watermarks.
What Redis still holds is a consistent earlier state (empty, or a replica's or snapshot's), so
replaying past its positions is exact; several workers repairing at once stay exactly-once
through the positions check as always. Only then is the marker cleared and the caller goes on
(a consumer resumes after the rebuilt positions; what lies between them and the batch in hand
is messages that were never applied: dead letters, late events).

A view with a lifetime window keeps, per entity, a state that never expires (online/layout.py),
merged in the same script call as the tiles: the replay rebuilds it from the whole log after a
wipe, so it is recovered as far back as the log goes (docs/semantics.md, "Lifetime state").

Pseudo-partitions (< 0: `fstore import`) are outside all this: an import to the log alone
leaves rows the online state never applied, so the log cannot say what an online import put in
Redis. After a loss, an online import is not replayed; `fstore backfill --from-log` can.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa

from featurestore.definitions import FeatureView, Function, ValueType
from featurestore.errors import FeatureStoreError
from featurestore.events import EventBatch
from featurestore.frequencies import value_counts
from featurestore.hyperloglog import member
from featurestore.keys import entity_keys
from featurestore.offline.log import (
    OFFSET,
    PARTITION,
    OfflineStore,
    batch_from_log,
    batch_table,
)
from featurestore.online import (
    BUCKET_FIELD,
    BUCKET_TILES,
    LIFETIME_BUCKET,
    Merged,
    OnlineStore,
    ShardWrite,
    StateLost,
    StoredState,
    entity_part,
    shard_of,
)
from featurestore.online.base import Newest, Pick
from featurestore.online.layout import sketch_name
from featurestore.percentiles import bucket_keys
from featurestore.positions import NO_POSITION, Position, late_events
from featurestore.retry import Retry, retry_online
from featurestore.tiles import I64, TileLayout

__all__ = ["Applied", "ViewWriter"]

Moves = dict[int, tuple[Position, Position]]  # partition -> (stored position, new position)
_ATTEMPTS = 20
_REBUILDS = 5  # losses in a row (one batch, or one rebuild) before the writer gives up
_LOG_BATCH = 50_000  # events per batch replayed from the log
_log = logging.getLogger("fstore.writer")


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
        # A lifetime window of a function kept beside the tiles: those values go to the
        # entity's lifetime key too.
        self._lifetime_beside = any(
            f.window.is_lifetime and (f.aside or f.function is Function.APPROX_PERCENTILE)
            for f in self.layout.features
        )
        self.retry = retry
        self.shards = online.shards
        # Where each partition resumes: the lowest of its shards' positions.
        self.positions: dict[int, Position] = {}
        # Per shard, its positions and epoch marker, as this writer last saw them.
        self.shard_positions: list[dict[int, Position]] = [{} for _ in range(self.shards)]
        self.epochs: list[str | None] = [None] * self.shards
        self.rebuilds = 0  # times this writer found the online state lost and rebuilt it

    @property
    def name(self) -> str:
        return f"view {self.view.name} v{self.version}"

    def load_positions(self) -> dict[int, Position]:
        """Read where this version stands from Redis (the truth), e.g. on a partition
        assignment — after rebuilding its online state from the log if Redis lost it."""
        logged = self.offline.max_offsets(self.view.name, self.version)  # before Redis
        state = self._stored()
        reason = self._loss(state, logged)
        self._adopt(state)
        if reason is not None:
            self._rebuild(reason)
        return self.positions

    def check_state(self) -> bool:
        """Rebuild now if Redis lost this version's state (its epoch marker changed or went, a
        position moved back); one cheap read, no log. Returns whether it rebuilt."""
        reason = self._loss(self._stored(), None)
        if reason is None:
            return False
        self._rebuild(reason)
        return True

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
        crash losing one (it runs again if the batch is redone: at least once). When Redis
        turns out to have lost the version's state, it is rebuilt from the log first.
        """
        done = Applied()
        for _rebuilt in range(_REBUILDS):
            lost = self._apply(batch, last_offsets, on_late, done, log=True)
            if lost is None:
                return done
            self._rebuild(lost.reason)
        raise FeatureStoreError(
            f"{self.name}: Redis lost this version's state {_REBUILDS} times while one batch "
            "was applied; is it restarting again and again without its data?"
        )

    def _apply(
        self,
        batch: EventBatch,
        last_offsets: dict[int, int],
        on_late: Callable[[I64], None] | None,
        done: Applied,
        log: bool,
    ) -> StateLost | None:
        """One batch, redone while positions move under the writer; `StateLost` when Redis
        lost the state (nothing merged: the caller rebuilds, then calls again). `log=False`:
        the events are in the offline log already (a replay of it).

        Shards. Each shard's rows go to Redis in one script with that shard's positions, so a
        crash between two shards' scripts leaves shards at different positions. The writer
        resumes each partition from the lowest, decides lateness from there (the same decisions
        as the first time: they depend only on the events before, in offset order), and gives
        each shard only its events past its own position; a shard already past the batch's end
        is left alone."""
        for _attempt in range(_ATTEMPTS):
            applied, late, moves, shard_of_row = self._select(batch, last_offsets)
            if not moves:
                return None  # replayed: this version already has the whole batch
            if on_late is not None and len(late):
                on_late(late)
            writes = self._writes(batch, applied, moves, shard_of_row)
            if log and len(applied):
                # Announced first: a log that holds more than Redis's positions and these
                # offsets is a Redis that lost writes, not a crash before the merge.
                ends = {p: new.offset for shard in moves for p, (_old, new) in shard.items()}
                self.retry(partial(self.online.announce, self.view.name, self.version, ends))
                self.offline.append(
                    self.view.name,
                    self.version,
                    batch_table(self.view.source.schema_, batch, applied),
                )
            results = self.retry(
                partial(self.online.merge_shards, self.view.name, self.version, self.layout, writes)
            )
            lost: StateLost | None = None
            conflict = False
            for write, result in zip(writes, results, strict=True):
                if isinstance(result, Merged):
                    self.epochs[write.shard] = result.epoch
                    self.shard_positions[write.shard].update(
                        {p: new for p, (_old, new) in write.moves.items()}
                    )
                elif isinstance(result, StateLost):
                    lost = lost or result
                else:
                    conflict = True
            self._resume_points()
            if lost is None and not conflict:
                done.applied += len(applied)
                done.late = _union(done.late, late)
                return None
            if lost is not None:
                if log:
                    # Logged: the rebuild applies these events; the redo will find them done.
                    done.applied += len(applied)
                    done.late = _union(done.late, late)
                return lost
            # Another worker moved this version (a rebalance) or we replayed: re-read and redo
            # (the shards merged just now are past the batch and are left alone).
            done.conflicts += 1
            state = self._stored()
            reason = self._loss(state, None)
            if reason is not None:
                return StateLost(reason)  # e.g. a position moved back that the batch left out
            self._adopt(state)
        raise FeatureStoreError(
            f"{self.name}: positions kept changing under this writer ({_ATTEMPTS} attempts); "
            "is another writer replaying the same partitions?"
        )

    def _stored(self) -> StoredState:
        return self.retry(partial(self.online.state, self.view.name, self.version))

    def _adopt(self, state: StoredState) -> None:
        self.shard_positions = [dict(positions) for positions in state.shards]
        self.epochs = list(state.epochs)
        self._resume_points()

    def _resume_points(self) -> None:
        partitions = {p for positions in self.shard_positions for p in positions}
        self.positions = {
            p: min(
                (positions.get(p, NO_POSITION) for positions in self.shard_positions),
                key=lambda at: at.offset,
            )
            for p in partitions
        }

    def _loss(self, state: StoredState, logged: dict[int, int] | None) -> str | None:
        """Why Redis no longer holds this version's state (the rules of the module docstring),
        or None. `logged`: the log's newest offset per partition, read before `state`; None for
        the checks that need no log (a rebuild marker then means another writer rebuilds)."""
        if logged is not None and state.rebuilding is not None:
            return f"a rebuild of it began and did not finish ({state.rebuilding})"
        for shard, (mine, stored) in enumerate(zip(self.epochs, state.epochs, strict=True)):
            if mine is not None and stored != mine:
                where = f" (shard {shard})" if shard else ""
                return f"its epoch marker is {stored or 'gone'}, not {mine} as before{where}"
        for shard, (seen, now) in enumerate(zip(self.shard_positions, state.shards, strict=True)):
            back = {
                p: (now.get(p, NO_POSITION).offset, mine.offset)
                for p, mine in seen.items()
                if now.get(p, NO_POSITION).offset < mine.offset
            }
            if back:
                where = f" in shard {shard}" if shard else ""
                return f"positions moved back{where} (partition: stored, seen before): " + _listed(
                    back
                )
        if logged is None:
            return None
        short = {
            p: (max(state.positions.get(p, NO_POSITION).offset, state.appending.get(p, -1)), end)
            for p, end in logged.items()
            if end > max(state.positions.get(p, NO_POSITION).offset, state.appending.get(p, -1))
        }
        if not short:
            return None
        if all(epoch is None for epoch in state.epochs) and not state.positions:
            return (
                "Redis holds no position of it (restarted without its data, or flushed) while "
                "the offline log holds applied events up to (partition: offset) "
                + ", ".join(f"{p}: {end}" for p, end in sorted(logged.items()))
            )
        return (
            "its positions are behind the offline log (a failover to a replica that lagged, "
            "or a restart from an older snapshot); partition: stored, logged: " + _listed(short)
        )

    def _rebuild(self, reason: str) -> None:
        """Replay the log past the stored positions, with the rebuild marker set (reads say
        `rebuilding`); started over if Redis loses the state again meanwhile."""
        _log.warning(
            "%s: Redis lost its online state: %s. Rebuilding it from the offline log; reads "
            "report `rebuilding` until it is done",
            self.name,
            reason,
        )
        began = time.monotonic()
        for _started in range(_REBUILDS):
            self.retry(partial(self.online.set_rebuilding, self.view.name, self.version, reason))
            self._adopt(self._stored())
            replayed = self._replay_log()
            if replayed is not None:
                break
            _log.warning(
                "%s: Redis lost the state again during the rebuild; starting over", self.name
            )
        else:
            raise FeatureStoreError(
                f"{self.name}: Redis lost this version's state {_REBUILDS} times during one "
                "rebuild; is it restarting again and again without its data?"
            )
        self.retry(partial(self.online.set_rebuilding, self.view.name, self.version, None))
        self.rebuilds += 1
        _log.warning(
            "%s: online state rebuilt from the offline log in %.1fs (%d events replayed); "
            "positions now (partition: offset) %s",
            self.name,
            time.monotonic() - began,
            replayed,
            ", ".join(f"{p}: {at.offset}" for p, at in sorted(self.positions.items())) or "none",
        )

    def _replay_log(self) -> int | None:
        """Apply the logged events past the stored positions; how many, or None if Redis lost
        the state again meanwhile."""
        after = {p: at.offset for p, at in self.positions.items()}
        replayed = late = 0
        for batch in _log_batches(self.offline, self.view, self.version, after):
            done = Applied()
            if self._apply(batch, batch.last_offsets(), None, done, log=False) is not None:
                return None
            replayed += done.applied
            late += len(done.late)
        if late:
            # The log holds only applied events, so none can be late now: a changed rule?
            _log.warning(
                "%s: %d logged events were late when replayed and are not in the rebuilt state",
                self.name,
                late,
            )
        return replayed

    def _select(
        self, batch: EventBatch, last_offsets: dict[int, int]
    ) -> tuple[I64, I64, list[Moves], I64]:
        """Fresh events split into applied and late, each shard's moves, and the shard of each
        event (-1: none takes it). An event is fresh for a shard when it is past that shard's
        position; lateness is decided once per partition, from its lowest shard position."""
        n = len(batch.ts)
        shard_of_row = np.full(n, -1, dtype=np.int64)
        if self.shards > 1 and n:
            names = entity_keys(batch.columns, self.view.join_keys)
            entity = pa.array(names, pa.string()).dictionary_encode()
            shard_of_name = np.array(
                [shard_of(name, self.shards) for name in entity.dictionary.to_pylist()],
                dtype=np.int64,
            )
            event_shard = shard_of_name[entity.indices.to_numpy()]
        else:
            event_shard = np.zeros(n, dtype=np.int64)
        applied: list[I64] = []
        late: list[I64] = []
        moves: list[Moves] = [{} for _ in range(self.shards)]
        for partition, last in last_offsets.items():
            stands = [positions.get(partition, NO_POSITION) for positions in self.shard_positions]
            base = min(stands, key=lambda at: at.offset)
            if last <= base.offset:
                continue  # replayed: every shard already has the whole batch of this partition
            index = np.flatnonzero((batch.partition == partition) & (batch.offset > base.offset))
            is_late, watermark = late_events(batch.ts[index], base.watermark, self.view.lateness_us)
            fresh = index[~is_late]
            taken = np.zeros(len(fresh), dtype=bool)
            for shard, old in enumerate(stands):
                if last <= old.offset:
                    continue  # this shard is past the batch already (a crash between shards)
                mine = (event_shard[fresh] == shard) & (batch.offset[fresh] > old.offset)
                taken |= mine
                shard_of_row[fresh[mine]] = shard
                moves[shard][partition] = (old, Position(last, watermark))
            if len(index):
                applied.append(fresh[taken])
                late.append(index[is_late])
        return (
            np.sort(np.concatenate(applied)) if applied else _no_rows(),
            np.concatenate(late) if late else _no_rows(),
            moves if any(moves) else [],
            shard_of_row,
        )

    def _writes(
        self, batch: EventBatch, applied: I64, moves: list[Moves], shard_of_row: I64
    ) -> list[ShardWrite]:
        """Each moving shard's part of the batch (a shard without events still moves)."""
        writes = []
        for shard, shard_moves in enumerate(moves):
            if not shard_moves:
                continue
            mine = applied[shard_of_row[applied] == shard] if self.shards > 1 else applied
            keys, ttls, rows, distinct, sketches = self._tile_rows(batch, mine, shard_moves)
            picks: list[Pick] = []
            newest: list[Newest] = []
            if (self.layout.picks or self.layout.newest) and len(mine):
                sides = self._side_groups(batch, mine)
                picks = self._picks(sides, batch)
                newest = self._newest(sides, batch)
            writes.append(
                ShardWrite(
                    shard,
                    keys,
                    ttls,
                    rows,
                    shard_moves,
                    distinct,
                    self.epochs[shard],
                    sketches,
                    picks,
                    newest,
                )
            )
        return writes

    def _tile_rows(
        self, batch: EventBatch, applied: I64, moves: Moves
    ) -> tuple[
        list[str],
        list[int],
        np.ndarray,
        list[tuple[int, str, str, list[str]]],
        list[tuple[int, str, str, list[str | int]]],
    ]:
        """The Redis keys, TTLs, tile and bucket state rows, distinct members and percentile
        sketch counts of `applied` (events of one shard), in the form
        `OnlineStore.merge_batch` takes."""
        layout, view = self.layout, self.view
        if len(applied) == 0:
            return [], [], np.zeros((0, layout.width + 2)), [], []
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
        keys = [f"{entity_part(names[codes[i]])}:{bucket[i]}" for i in bucket_first]
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
            kind, values = view.source.schema_[column], batch.columns[column]
            per_tile: dict[int, set[str]] = {}
            per_bucket: dict[int, set[str]] = {}
            for row, event in enumerate(taken):
                text = member(kind, values[event])
                per_tile.setdefault(int(tile_group[row]), set()).add(text)
                per_bucket.setdefault(int(bucket_group[row]), set()).add(text)
            for group, members in per_tile.items():
                key = int(key_of_tile_group[group])
                distinct.append((key, tile_fields[group], column, sorted(members)))
            for group, members in per_bucket.items():
                distinct.append((group, BUCKET_FIELD, column, sorted(members)))
        # Counts beside the tiles, per tile, per bucket and (for a lifetime window of a
        # function kept beside the tiles) per entity into its lifetime key, which
        # `_lifetime_rows` puts right after the bucket keys, in entity-code order.
        places: list[tuple[I64, Callable[[int], tuple[int, str]]]] = [
            (tile_group, lambda g: (int(key_of_tile_group[g]), tile_fields[g])),
            (bucket_group, lambda g: (g, BUCKET_FIELD)),
        ]
        if self._lifetime_beside:
            places.append((codes, lambda g: (len(bucket_first) + g, BUCKET_FIELD)))
        sketches: list[tuple[int, str, str, list[str | int]]] = []
        for column, accuracy in layout.sketches:
            numbers = np.asarray(batch.columns[column], dtype=np.float64)[applied]
            name = sketch_name(column, accuracy)
            bucket_keys_ = bucket_keys(numbers, accuracy)
            for grouping, where in places:
                for group, counted in _sketch_counts(grouping, bucket_keys_):
                    sketches.append((*where(group), name, counted))
        for column in layout.counted:
            encoded = pa.array([batch.columns[column][i] for i in taken], pa.string())
            encoded = encoded.dictionary_encode()
            texts = encoded.dictionary.to_pylist()
            value_codes = encoded.indices.to_numpy().astype(np.int64)
            name = value_counts(column)
            for grouping, where in places:
                for group, flat in _sketch_counts(grouping, value_codes):
                    named = [texts[int(x)] if i % 2 == 0 else x for i, x in enumerate(flat)]
                    sketches.append((*where(group), name, named))
        ttl_list = [int(t) for t in ttls]
        if view.has_lifetime:
            rows = self._lifetime_rows(batch, taken, codes, names, keys, ttl_list, rows, distinct)
        return keys, ttl_list, rows, distinct, sketches

    def _lifetime_rows(
        self,
        batch: EventBatch,
        taken: list[int],
        codes: I64,
        names: list[str],
        keys: list[str],
        ttls: list[int],
        rows: np.ndarray,
        distinct: list[tuple[int, str, str, list[str]]],
    ) -> np.ndarray:
        """Adds to `keys`, `ttls` and `distinct` (in place) each entity's lifetime state —
        one key per entity (`LIFETIME_BUCKET`) that never expires (ttl -1), merged in the same
        script call as the tiles and the positions, so exactly once — and returns the rows
        with its states appended."""
        layout = self.layout
        applied = np.asarray(taken, dtype=np.int64)
        columns = {
            c: np.asarray(batch.columns[c], dtype=np.float64)[applied] for c in layout.columns
        }
        states = layout.reduce(
            codes,
            len(names),
            batch.ts[applied],
            batch.partition[applied],
            batch.offset[applied],
            columns,
        )
        first_key = len(keys)
        keys += [f"{entity_part(name)}:{LIFETIME_BUCKET}" for name in names]
        ttls += [-1] * len(names)
        extra = np.empty((len(names), layout.width + 2))
        extra[:, 0] = np.arange(first_key, first_key + len(names))
        extra[:, 1] = -1
        extra[:, 2:] = states
        lifetime_columns = {
            f.column
            for f in layout.features
            if f.window.is_lifetime and f.function is Function.APPROX_COUNT_DISTINCT
        }
        for column in sorted(c for c in lifetime_columns if c is not None):
            kind, values = self.view.source.schema_[column], batch.columns[column]
            per_entity: dict[int, set[str]] = {}
            for row, event in enumerate(taken):
                per_entity.setdefault(int(codes[row]), set()).add(member(kind, values[event]))
            for code, members in per_entity.items():
                distinct.append((first_key + code, BUCKET_FIELD, column, sorted(members)))
        return np.concatenate((rows, extra))

    def _side_groups(self, batch: EventBatch, applied: I64) -> _SideGroups:
        """`applied` (one shard's events) grouped per tile and per bucket as `_tile_rows`
        groups them (the same key indexes), for the values kept beside the tile states."""
        layout, view = self.layout, self.view
        taken = applied.tolist()
        names_of_rows = entity_keys(
            {k: [batch.columns[k][i] for i in taken] for k in view.join_keys}, view.join_keys
        )
        codes = (
            pa.array(names_of_rows, pa.string()).dictionary_encode().indices.to_numpy()
        ).astype(np.int64)
        ts = batch.ts[applied]
        tile = ts // layout.tile_us
        bucket = tile // BUCKET_TILES
        _ids, bucket_first, bucket_group = _groups(codes, bucket)
        _ids, tile_first, tile_group = _groups(codes, tile)
        key_of_tile = bucket_group[tile_first].tolist()
        field_of_tile = (tile[tile_first] - bucket[tile_first] * BUCKET_TILES).tolist()
        places = [
            (tile_group, [(k, str(f)) for k, f in zip(key_of_tile, field_of_tile, strict=True)]),
            (bucket_group, [(g, BUCKET_FIELD) for g in range(len(bucket_first))]),
        ]
        if self._lifetime_beside:  # the entity's lifetime key: right after the bucket keys
            entities = int(codes.max()) + 1 if len(codes) else 0
            places.append((codes, [(len(bucket_first) + c, BUCKET_FIELD) for c in range(entities)]))
        return _SideGroups(taken, ts, batch.partition[applied], batch.offset[applied], places)

    def _picks(self, sides: _SideGroups, batch: EventBatch) -> list[Pick]:
        """Per tile and per bucket, the first and last event of each string column `first` /
        `last` read."""
        picks: list[Pick] = []
        for group, where in sides.places:
            order = np.lexsort((sides.offset, sides.partition, sides.ts, group))
            ordered = group[order]
            edges = np.r_[True, ordered[1:] != ordered[:-1]]
            ends = {
                Function.FIRST: order[edges],
                Function.LAST: order[np.r_[edges[1:], True]],
            }
            for column, function in self.layout.picks:
                values = batch.columns[column]
                for row in ends[function].tolist():
                    key, field = where[int(group[row])]
                    picks.append(
                        (
                            key,
                            field,
                            column,
                            function.value,
                            int(sides.ts[row]),
                            int(sides.partition[row]),
                            int(sides.offset[row]),
                            str(values[sides.taken[row]]),
                        )
                    )
        return picks

    def _newest(self, sides: _SideGroups, batch: EventBatch) -> list[Newest]:
        """Per tile and per bucket, the n newest events of each `last_n` column, newest first;
        numbers as their shortest round-trip text (bools 1.0 / 0.0), strings as they are."""
        out: list[Newest] = []
        for group, where in sides.places:
            order = np.lexsort((sides.offset, sides.partition, sides.ts, group))[::-1]
            ordered = group[order]
            starts = np.r_[True, ordered[1:] != ordered[:-1]]
            start_of = np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))
            rank = np.arange(len(order)) - start_of  # 0 = the newest of its group
            for column, n in self.layout.newest:
                values = batch.columns[column]
                text = _last_n_text(self.view.source.schema_[column])
                lists: dict[int, list[tuple[int, int, int, str]]] = {}
                for row in order[rank < n].tolist():
                    lists.setdefault(int(group[row]), []).append(
                        (
                            int(sides.ts[row]),
                            int(sides.partition[row]),
                            int(sides.offset[row]),
                            text(values[sides.taken[row]]),
                        )
                    )
                for g, entries in lists.items():
                    key, field = where[g]
                    out.append((key, field, column, n, entries))
        return out


def _log_batches(
    offline: OfflineStore, view: FeatureView, version: int, after: dict[int, int]
) -> Iterator[EventBatch]:
    """The version's logged events of Kafka partitions past `after` (partition -> offset), in
    (partition, offset) order, in batches of at most `_LOG_BATCH` (bounded memory)."""
    for chunk in offline.scan_events(view.name, version, _LOG_BATCH):
        partition = chunk[PARTITION].to_numpy().astype(np.int64)
        offset = chunk[OFFSET].to_numpy().astype(np.int64)
        floor = np.full(len(partition), -1, dtype=np.int64)
        for p, at in after.items():
            floor[partition == p] = at
        keep = (partition >= 0) & (offset > floor)
        if keep.any():
            yield batch_from_log(chunk.filter(pa.array(keep)), view.source.timestamp_field)


@dataclass(frozen=True)
class _SideGroups:
    """One shard's applied events as `ViewWriter._side_groups` groups them: the batch rows,
    their (time, partition, offset), and per grouping (tiles, buckets) each event's group and
    each group's (key index, field)."""

    taken: list[int]
    ts: I64
    partition: I64
    offset: I64
    places: list[tuple[I64, list[tuple[int, str]]]]


def _last_n_text(kind: ValueType) -> Callable[[Any], str]:
    """How a `last_n` value travels to Redis: a string as it is, a number (or bool) as the
    shortest text that reads back as the same float64."""
    if kind is ValueType.STRING:
        return str
    return lambda value: repr(float(value))


def _sketch_counts(group: I64, keys: I64) -> Iterator[tuple[int, list[str | int]]]:
    """Per group, its events' bucket keys and how many fell in each: [key, count, ...], keys
    as text (the merge script's JSON would round large numbers)."""
    order = np.lexsort((keys, group))
    g, k = group[order], keys[order]
    starts = np.flatnonzero(np.r_[True, (g[1:] != g[:-1]) | (k[1:] != k[:-1])])
    counts = np.diff(np.r_[starts, len(g)]).tolist()
    runs_group, runs_key = g[starts].tolist(), k[starts].tolist()
    current: int | None = None
    flat: list[str | int] = []
    for run_group, run_key, count in zip(runs_group, runs_key, counts, strict=True):
        if run_group != current:
            if current is not None:
                yield current, flat
            current, flat = run_group, []
        flat += [str(run_key), count]
    if current is not None:
        yield current, flat


def _union(a: I64, b: I64) -> I64:
    """Late indexes of two attempts at one batch (as given when there is only one)."""
    return b if not len(a) else a if not len(b) else np.unique(np.concatenate((a, b)))


def _listed(pairs: dict[int, tuple[int, int]]) -> str:
    return ", ".join(f"{p}: {a}, {b}" for p, (a, b) in sorted(pairs.items()))


def _groups(codes: I64, values: I64) -> tuple[I64, I64, I64]:
    """Group rows by (entity code, value): ids, first row of each group, group of each row."""
    span = int(values.max() - values.min()) + 1
    composite = codes * span + (values - values.min())
    ids, first, group = np.unique(composite, return_index=True, return_inverse=True)
    return ids, first, group.astype(np.int64)
