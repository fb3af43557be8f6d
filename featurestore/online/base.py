"""What the feature writer and the readers need of an online store: `OnlineStore` implements it,
on one Redis or a Redis Cluster (its entities spread over shards, layout.py).

A store keeps, per view version, the tile states of each entity and each partition's
`Position`, and moves both in one atomic step per batch (exactly-once effect). Beside them it
keeps what lets a writer tell a version that never applied anything from one whose state Redis
lost (featurestore/writer.py has the rule): an epoch marker written with the first position,
the offsets writers announced before appending to the offline log, and a rebuild marker that
makes reads say `rebuilding` while the state is being rebuilt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from featurestore.online.plan import ReadPlan
from featurestore.positions import Position, PositionConflict
from featurestore.tiles import F64, TileLayout

__all__ = [
    "Merged",
    "Newest",
    "Pick",
    "ShardWrite",
    "StateLost",
    "StateRead",
    "StoredState",
    "TileStore",
]

Pick = tuple[int, str, str, str, int, int, int, str]
"""A tile's `first` / `last` event of a string column, as the merge script takes it."""

Newest = tuple[int, str, str, int, list[tuple[int, int, int, str]]]
"""A tile's n newest events of a column (`last_n`), as the merge script takes them."""

StateRead = tuple[Sequence[str], ReadPlan, TileLayout]
"""One read of window states: its entities' cache keys, the plan they share, the layout."""


@dataclass(frozen=True)
class StoredState:
    """What the store holds of a view version's bookkeeping: each shard's positions and epoch
    marker (read per shard in one atomic step), the offsets writers announced, and a rebuild
    marker if any shard carries one."""

    positions: dict[int, Position]  # per partition, the lowest shard position: where to resume
    # Per shard, its epoch marker (written with its first position; None: none since the shard
    # was empty).
    epochs: tuple[str | None, ...]
    appending: dict[int, int]  # per partition, the newest offset a writer announced it logs
    rebuilding: str | None  # why a rebuild is under way (a marker), or None
    shards: tuple[dict[int, Position], ...] = ()  # per shard, its own positions

    @property
    def epoch(self) -> str | None:
        """The first shard's epoch marker (the only one with one shard)."""
        return self.epochs[0] if self.epochs else None


@dataclass(frozen=True)
class ShardWrite:
    """One shard's part of a batch (`TileStore.merge_shards`): its rows (key index, field,
    state...) over its keys ("<entity part>:<bucket>"), its partitions' moves from -> to, and
    the shard's epoch marker as the writer holds it."""

    shard: int
    keys: Sequence[str]
    ttls_ms: Sequence[int]
    rows: F64
    moves: dict[int, tuple[Position, Position]]
    distinct: Sequence[tuple[int, str, str, list[str]]] = ()
    epoch: str | None = None
    # Percentile sketch counts: (key index, field, sketch name, [bucket key, count, ...]).
    sketches: Sequence[tuple[int, str, str, list[str | int]]] = ()
    # `first` / `last` of string columns, per tile: (key index, field, column, function,
    # time, partition, offset, value) of the tile's winning event.
    picks: Sequence[Pick] = ()
    # `last_n`, per tile: (key index, field, column, n, [[time, partition, offset, value]...])
    # of the tile's n newest events.
    newest: Sequence[Newest] = ()


@dataclass(frozen=True)
class Merged:
    """A batch merged and its positions moved; the version's epoch marker (maybe new)."""

    epoch: str


@dataclass(frozen=True)
class StateLost:
    """Why a batch write changed nothing: the store no longer holds the state the writer was
    writing to (its epoch marker changed or went, or a position moved back). The store has set
    the version's rebuild marker in the same atomic step."""

    reason: str


class TileStore(Protocol):
    """An online store of tile states, as the writer (`merge_batch`, `state`) and the
    readers (`read`, `read_async`, through `online.values`) use it."""

    shards: int  # how many shards a view version's entities are spread over (layout.py)

    def entity_prefix(self, view: str, version: int, entity: str) -> str:
        """The prefix of an entity's keys (readers build its cache and sketch keys on it)."""
        ...

    def rebuild_key(self, view: str, version: int, shard: int) -> str:
        """One shard's rebuild marker (readers ask whether it is set)."""
        ...

    def positions(self, view: str, version: int) -> dict[int, Position]:
        """Each partition's stored position of a view version (the lowest of its shards')."""
        ...

    def state(self, view: str, version: int) -> StoredState:
        """Positions, epoch marker, announced offsets and rebuild marker, at one moment."""
        ...

    def announce(self, view: str, version: int, offsets: dict[int, int]) -> None:
        """Record, before a batch goes to the offline log, the newest offset per partition it
        holds (kept as the greatest announced)."""
        ...

    def set_rebuilding(self, view: str, version: int, reason: str | None) -> None:
        """Set the version's rebuild marker (reads then report `rebuilding`), or clear it."""
        ...

    def merge_batch(
        self,
        view: str,
        version: int,
        layout: TileLayout,
        keys: Sequence[str],
        ttls_ms: Sequence[int],
        rows: F64,
        moves: dict[int, tuple[Position, Position]],
        distinct: Sequence[tuple[int, str, str, list[str]]] = (),
        epoch: str | None = None,
        shard: int = 0,
    ) -> Merged | PositionConflict | StateLost:
        """Merge one shard's part of a batch: tile rows and move its partitions from -> to; or
        change nothing and say which stored position was not the expected one, or that the
        state the writer held (`epoch`, the positions it last merged) is not there any more."""
        ...

    def merge_shards(
        self, view: str, version: int, layout: TileLayout, writes: Sequence[ShardWrite]
    ) -> list[Merged | PositionConflict | StateLost]:
        """`merge_batch` of several shards at once; each answers for its own shard."""
        ...

    def read(
        self,
        reads: Sequence[StateRead],
        distinct: Sequence[Sequence[str]] = (),
        rebuilding: Sequence[Sequence[str]] = (),
    ) -> tuple[list[F64], list[int], list[bool]]:
        """Merged window states per read (entities, windows, width), distinct counts, and
        whether any rebuild marker of each list of `rebuilding` is set."""
        ...

    async def read_async(
        self,
        reads: Sequence[StateRead],
        distinct: Sequence[Sequence[str]] = (),
        rebuilding: Sequence[Sequence[str]] = (),
    ) -> tuple[list[F64], list[int], list[bool]]:
        """`read` on the running event loop."""
        ...

    def read_sketches(self, windows: Sequence[Sequence[str]]) -> list[dict[int, int]]:
        """Per list of percentile sketch keys (one entity's window), their bucket counts
        summed: the window's sketch."""
        ...

    async def read_sketches_async(self, windows: Sequence[Sequence[str]]) -> list[dict[int, int]]:
        """`read_sketches` on the running event loop."""
        ...

    def read_counts(self, windows: Sequence[Sequence[str]]) -> list[dict[str, int]]:
        """Per list of one entity's window's `top_k` count hashes, their counts summed."""
        ...

    async def read_counts_async(self, windows: Sequence[Sequence[str]]) -> list[dict[str, int]]:
        """`read_counts` on the running event loop."""
        ...

    def read_picks(self, windows: Sequence[tuple[str, Sequence[str]]]) -> list[str | None]:
        """Per (function, keys of one entity's window of a string column's `first` / `last`),
        the winning value, None when the window holds none."""
        ...

    async def read_picks_async(
        self, windows: Sequence[tuple[str, Sequence[str]]]
    ) -> list[str | None]:
        """`read_picks` on the running event loop."""
        ...

    def read_newest(self, windows: Sequence[tuple[int, Sequence[str]]]) -> list[list[str]]:
        """Per (n, keys of one entity's window of a `last_n`), the values of the window's n
        newest events, newest first, as text."""
        ...

    async def read_newest_async(
        self, windows: Sequence[tuple[int, Sequence[str]]]
    ) -> list[list[str]]:
        """`read_newest` on the running event loop."""
        ...

    def close(self) -> None:
        """Close the store's connections."""
        ...
