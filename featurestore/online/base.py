"""What the feature writer and the readers need of an online store: `OnlineStore` (one Redis)
implements it now; a Redis Cluster store is the next.

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

__all__ = ["Merged", "StateLost", "StateRead", "StoredState", "TileStore"]

StateRead = tuple[Sequence[str], ReadPlan, TileLayout]
"""One read of window states: its entities' cache keys, the plan they share, the layout."""


@dataclass(frozen=True)
class StoredState:
    """What the store holds of a view version's bookkeeping, read in one atomic step."""

    positions: dict[int, Position]
    epoch: str | None  # written with the first position; None: none since the store was empty
    appending: dict[int, int]  # per partition, the newest offset a writer announced it logs
    rebuilding: str | None  # why a rebuild is under way (its marker), or None


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

    def view_prefix(self, view: str, version: int) -> str:
        """The prefix of every key of a view version (readers build entity keys on it)."""
        ...

    def positions(self, view: str, version: int) -> dict[int, Position]:
        """Each partition's stored position of a view version."""
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
    ) -> Merged | PositionConflict | StateLost:
        """Merge a batch's tile rows and move its partitions from -> to; or change nothing and
        say which stored position was not the expected one, or that the state the writer held
        (`epoch`, the positions it last merged) is not there any more."""
        ...

    def read(
        self,
        reads: Sequence[StateRead],
        distinct: Sequence[Sequence[str]] = (),
        rebuilding: Sequence[str] = (),
    ) -> tuple[list[F64], list[int], list[bool]]:
        """Merged window states per read (entities, windows, width), distinct counts, and
        whether each view prefix of `rebuilding` carries a rebuild marker."""
        ...

    async def read_async(
        self,
        reads: Sequence[StateRead],
        distinct: Sequence[Sequence[str]] = (),
        rebuilding: Sequence[str] = (),
    ) -> tuple[list[F64], list[int], list[bool]]:
        """`read` on the running event loop."""
        ...

    def close(self) -> None:
        """Close the store's connections."""
        ...
