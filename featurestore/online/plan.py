"""What a read at one tile gathers: which (bucket, field) states cover each window.

Tiles are grouped in buckets of `BUCKET_TILES`; each bucket's hash holds one field per tile
("<i>", the tile's place in the bucket) and its total (`BUCKET_FIELD`), so a long window reads
whole buckets in the middle and single tiles only at its two edges.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import orjson

from featurestore.online.scripts import FOLD_ARGS
from featurestore.redis_pipe import bulks
from featurestore.tiles import TileLayout
from featurestore.windows import TileWindow, window_range

__all__ = [
    "BUCKET_FIELD",
    "BUCKET_TILES",
    "LIFETIME_BUCKET",
    "ReadPlan",
    "plan_window",
    "read_plan",
]

BUCKET_TILES = 60
BUCKET_FIELD = "b"
LIFETIME_BUCKET = "life"  # the hash of an entity's never-expiring lifetime state, field "b"


@dataclass(frozen=True, eq=False)
class ReadPlan:
    """What a read at one tile gathers: per bucket its fields, and per window its rows."""

    # window -> its (bucket, field) states (their HyperLogLogs give distinct counts)
    windows: dict[TileWindow, list[tuple[int | str, str]]]
    order: tuple[TileWindow, ...]  # the windows in the order the fold script returns them
    # The fold script's ARGV, packed as Redis takes them (see `OnlineStore._read_commands`).
    script_args: bytes


@functools.lru_cache(maxsize=256)
def read_plan(now_tile: int, layout: TileLayout) -> ReadPlan:
    """The same for every read of a layout in the same tile: cached, since reads repeat it
    thousands of times a second.

    Each window's tiles come from `window_range`. The fold script folds the windows in
    `layout.windows` order: a window ending on the same tile as the one before (same step and
    lag) adds only its older tiles to that one's fold; any other starts afresh (a 0 before its
    rows). A lifetime window reads the entity's lifetime state (`LIFETIME_BUCKET`)."""
    order = layout.windows
    windows: dict[TileWindow, list[tuple[int | str, str]]] = {}
    added: list[list[tuple[int | str, str]]] = []
    fresh: list[bool] = []
    before: TileWindow | None = None
    for window in order:
        if window.is_lifetime:
            windows[window] = [(LIFETIME_BUCKET, BUCKET_FIELD)]
            added.append(windows[window])
            fresh.append(before is not None)
            before = window
            continue
        span = window_range(window, layout.tile_us, now_tile * layout.tile_us)
        first = span.first
        assert first is not None  # noqa: S101 - only a lifetime window has no first tile
        windows[window] = list(plan_window(first, span.last))
        extends = (
            before is not None
            and not before.is_lifetime
            and (before.step, before.lag) == (window.step, window.lag)
        )
        if extends and before is not None:
            newer = window_range(before, layout.tile_us, now_tile * layout.tile_us).first
            assert newer is not None  # noqa: S101 - `before` is not a lifetime window
            added.append(list(plan_window(first, newer - 1)))
        else:
            added.append(windows[window])
        fresh.append(before is not None and not extends)
        before = window
    items = sorted({item for plan in added for item in plan}, key=_bucket_major)
    position = {item: i for i, item in enumerate(items)}  # bucket-major, as gathered
    by_bucket: dict[int | str, list[str]] = {}
    for bucket, field in items:
        by_bucket.setdefault(bucket, []).append(field)
    rows = [
        [0] * restart + [position[item] + 1 for item in plan]
        for plan, restart in zip(added, fresh, strict=True)
    ]
    args = (
        layout.merge_codes().encode(),
        orjson.dumps([str(bucket) for bucket in by_bucket]),
        orjson.dumps(list(by_bucket.values())),
        orjson.dumps(rows),
        _no_state(layout.width),
        f"{now_tile};".encode(),  # the tag of what the script caches
        b"%d" % (layout.tile_us // 1000),  # how long the cache lives, ms
    )
    assert len(args) == FOLD_ARGS  # noqa: S101 - the script's contract
    return ReadPlan(windows, order, bulks(args))


def _bucket_major(item: tuple[int | str, str]) -> tuple[bool, int, str, str]:
    bucket, field = item
    if isinstance(bucket, str):
        return (True, 0, bucket, field)
    return (False, bucket, "", field)


def plan_window(first_tile: int, last_tile: int) -> list[tuple[int, str]]:
    """The (bucket, field) states that cover tiles first..last exactly, fewest first.

    >>> plan_window(58, 121)  # two edge tiles of bucket 0, all of bucket 1, two tiles of 2
    [(0, '58'), (0, '59'), (1, 'b'), (2, '0'), (2, '1')]
    """
    items: list[tuple[int, str]] = []
    for bucket in range(first_tile // BUCKET_TILES, last_tile // BUCKET_TILES + 1):
        low = bucket * BUCKET_TILES
        high = low + BUCKET_TILES - 1
        if first_tile <= low and high <= last_tile:
            items.append((bucket, BUCKET_FIELD))
        else:
            for tile in range(max(first_tile, low), min(last_tile, high) + 1):
                items.append((bucket, str(tile - low)))
    return items


@functools.lru_cache(maxsize=64)
def _no_state(width: int) -> bytes:
    return np.full(width, np.nan).astype("<f8").tobytes()
