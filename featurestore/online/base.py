"""What the feature writer and the readers need of an online store: `OnlineStore` (one Redis)
implements it now; a Redis Cluster store is the next.

A store keeps, per view version, the tile states of each entity and each partition's
`Position`, and moves both in one atomic step per batch (exactly-once effect).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from featurestore.online.plan import ReadPlan
from featurestore.positions import Position, PositionConflict
from featurestore.tiles import F64, TileLayout

__all__ = ["StateRead", "TileStore"]

StateRead = tuple[Sequence[str], ReadPlan, TileLayout]
"""One read of window states: its entities' cache keys, the plan they share, the layout."""


class TileStore(Protocol):
    """An online store of tile states, as the writer (`merge_batch`, `positions`) and the
    readers (`read`, `read_async`, through `online.values`) use it."""

    def view_prefix(self, view: str, version: int) -> str:
        """The prefix of every key of a view version (readers build entity keys on it)."""
        ...

    def positions(self, view: str, version: int) -> dict[int, Position]:
        """Each partition's stored position of a view version."""
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
    ) -> PositionConflict | None:
        """Merge a batch's tile rows and move its partitions from -> to, or change nothing and
        say which stored position was not the expected one."""
        ...

    def read(
        self, reads: Sequence[StateRead], distinct: Sequence[Sequence[str]] = ()
    ) -> tuple[list[F64], list[int]]:
        """Merged window states per read (entities, windows, width) and distinct counts."""
        ...

    async def read_async(
        self, reads: Sequence[StateRead], distinct: Sequence[Sequence[str]] = ()
    ) -> tuple[list[F64], list[int]]:
        """`read` on the running event loop."""
        ...

    def close(self) -> None:
        """Close the store's connections."""
        ...
