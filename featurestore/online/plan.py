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

__all__ = ["BUCKET_FIELD", "BUCKET_TILES", "ReadPlan", "plan_window", "read_plan"]

BUCKET_TILES = 60
BUCKET_FIELD = "b"


@dataclass(frozen=True, eq=False)
class ReadPlan:
    """What a read at one tile gathers: per bucket its fields, and per window its rows."""

    windows: dict[int, list[tuple[int, str]]]  # window length -> its (bucket, field) tiles (HLLs)
    lengths: tuple[int, ...]  # window lengths, in the order the fold script returns them
    # The fold script's ARGV, packed as Redis takes them (see `OnlineStore._read_commands`).
    script_args: bytes


@functools.lru_cache(maxsize=256)
def read_plan(now_tile: int, layout: TileLayout) -> ReadPlan:
    """The same for every read of a layout in the same tile: cached, since reads repeat it
    thousands of times a second."""
    window_lengths = layout.window_lengths
    windows = {n: plan_window(now_tile - n + 1, now_tile) for n in window_lengths}
    # What the fold reads: each window's tiles older than the window before it (all end now).
    added, newer = [], 0
    for n in window_lengths:
        added.append(plan_window(now_tile - n + 1, now_tile - newer))
        newer = n
    items = sorted({item for plan in added for item in plan})
    position = {item: i for i, item in enumerate(items)}  # bucket-major, as gathered
    by_bucket: dict[int, list[str]] = {}
    for bucket, field in items:
        by_bucket.setdefault(bucket, []).append(field)
    rows = [[position[item] + 1 for item in plan] for plan in added]
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
    return ReadPlan(windows, window_lengths, bulks(args))


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
