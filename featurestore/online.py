"""The online store: tile states in Redis, merged by a Lua script, read in one round trip.

Layout, per view version and entity:
    {ns}:{view}:{version}:{entity}:{bucket}   hash; field "<i>" = state of tile i of the bucket,
                                                field "b"   = state of the whole bucket
    {ns}:{view}:{version}:{entity}:{bucket}:h:{column}:{field}
                                               HyperLogLog of a column's values in that tile
    {ns}:{view}:{version}:_pos                 hash; field "<partition>" = "offset:watermark"
A bucket is `BUCKET_TILES` tiles, so a long window reads whole buckets in the middle and single
tiles only at its two edges. States are packed little-endian float64 vectors (see `tiles.py`).

Exactly-once effect: one script call per batch checks that every partition's stored position is
the one the batch started from, merges all tile states, and moves the positions — atomically. A
replayed batch or a second worker racing on a revoked partition fails the check and changes
nothing.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import orjson
import redis

from featurestore.config import RedisSettings
from featurestore.definitions import Function
from featurestore.errors import OnlineStoreError
from featurestore.tiles import F64, TileLayout

BUCKET_TILES = 60
BUCKET_FIELD = "b"

# KEYS[1] = positions hash. ARGV: merge codes, json positions, json keys, json ttls (ms), rows blob,
# json distinct values. A row is (key index, field, state...) as float64s; field -1 is the bucket
# total. Distinct values are [key index, field, column, [values...]].
_MERGE_SCRIPT = """
local codes = ARGV[1]
local width = #codes
local positions = cjson.decode(ARGV[2])
for _, p in ipairs(positions) do
  local stored = redis.call('HGET', KEYS[1], p[1])
  local offset = -1
  if stored then offset = tonumber(string.match(stored, '^(-?%d+):')) end
  if offset ~= tonumber(p[2]) then return {0, p[1], offset} end
end
local keys = cjson.decode(ARGV[3])
local ttls = cjson.decode(ARGV[4])
local blob = ARGV[5]
local fmt = '<' .. string.rep('d', width)
local rowfmt = '<dd' .. string.rep('d', width)
local rowsize = 8 * (width + 2)
local pos = 1
while pos <= #blob do
  local row = {struct.unpack(rowfmt, blob, pos)}
  pos = pos + rowsize
  local key = keys[row[1] + 1]
  local field = 'b'
  if row[2] >= 0 then field = string.format('%d', row[2]) end
  local new = {}
  for i = 1, width do new[i] = row[i + 2] end
  local cur = redis.call('HGET', key, field)
  if cur then
    local old = {struct.unpack(fmt, cur)}
    local i = 1
    while i <= width do
      local c = string.sub(codes, i, i)
      if c == 'a' then new[i] = old[i] + new[i]
      elseif c == 'x' then if old[i] > new[i] then new[i] = old[i] end
      elseif c == 'n' then if old[i] < new[i] then new[i] = old[i] end
      elseif c == 'L' then
        local older = old[i] < new[i] or (old[i] == new[i] and (old[i+1] < new[i+1] or
          (old[i+1] == new[i+1] and old[i+2] <= new[i+2])))
        if not older then for j = i, i + 3 do new[j] = old[j] end end
        i = i + 3
      elseif c == 'V' then
        -- (n, mean, M2) of two parts, combined with Chan et al.'s formula
        local na, nb = old[i], new[i]
        local n = na + nb
        if n > 0 then
          local d = new[i + 1] - old[i + 1]
          new[i + 2] = old[i + 2] + new[i + 2] + d * d * na * nb / n
          new[i + 1] = old[i + 1] + d * nb / n
          new[i] = n
        end
        i = i + 2
      end
      i = i + 1
    end
  end
  redis.call('HSET', key, field, struct.pack(fmt, unpack(new)))
end
for i, key in ipairs(keys) do redis.call('PEXPIRE', key, ttls[i]) end
for _, h in ipairs(cjson.decode(ARGV[6])) do
  local hll = keys[h[1] + 1] .. ':h:' .. h[3] .. ':' .. h[2]
  local values = h[4]
  for first = 1, #values, 1000 do
    redis.call('PFADD', hll, unpack(values, first, math.min(first + 999, #values)))
  end
  redis.call('PEXPIRE', hll, ttls[h[1] + 1])
end
for _, p in ipairs(positions) do
  redis.call('HSET', KEYS[1], p[1], p[3] .. ':' .. p[4])
end
return {1}
"""


@dataclass(frozen=True)
class Position:
    """Where a view stands on one partition: last applied offset and the watermark."""

    offset: int  # -1: nothing applied yet
    watermark: int  # newest event time seen, microseconds; -2**62 before any event


NO_POSITION = Position(-1, -(2**62))


@dataclass(frozen=True)
class Conflict:
    partition: int
    stored_offset: int


class OnlineStore:
    """Redis-backed tile states for feature views."""

    def __init__(self, config: RedisSettings) -> None:
        self.config = config
        self.namespace = config.namespace
        # Timeouts turn a hung server into an error the worker retries, not a silent stall.
        self.client = redis.Redis.from_url(config.url, socket_timeout=30, socket_connect_timeout=5)
        self._merge = self.client.register_script(_MERGE_SCRIPT)

    def view_prefix(self, view: str, version: int) -> str:
        return f"{self.namespace}:{view}:{version}"

    def positions(self, view: str, version: int) -> dict[int, Position]:
        with self._reachable():
            raw = self.client.hgetall(f"{self.view_prefix(view, version)}:_pos")
        out: dict[int, Position] = {}
        for partition, value in raw.items():
            text = value.decode() if isinstance(value, bytes) else value
            offset, watermark = text.split(":")
            out[int(partition)] = Position(int(offset), int(watermark))
        return out

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
    ) -> Conflict | None:
        """Merge `rows` (key index, field, state...) and move partitions from -> to, atomically.

        Returns a `Conflict` (and changes nothing) when a stored position is not the expected one.
        """
        prefix = self.view_prefix(view, version)
        # As strings: Lua numbers are doubles and would print a watermark as 1.77e+15.
        positions = [
            [str(p), str(old.offset), str(new.offset), str(new.watermark)]
            for p, (old, new) in moves.items()
        ]
        with self._reachable():
            result = self._merge(
                keys=[f"{prefix}:_pos"],
                args=[
                    layout.merge_codes(),
                    orjson.dumps(positions),
                    orjson.dumps([f"{prefix}:{k}" for k in keys]),
                    orjson.dumps(list(ttls_ms)),
                    np.ascontiguousarray(rows, dtype="<f8").tobytes(),
                    orjson.dumps(list(distinct)),
                ],
            )
        if int(result[0]) == 1:
            return None
        return Conflict(int(result[1]), int(result[2]))

    def read(
        self,
        states: Sequence[tuple[str, Sequence[str]]],
        distinct: Sequence[Sequence[str]] = (),
    ) -> tuple[list[list[bytes | None]], list[int]]:
        """HMGET each (key, fields) and PFCOUNT each key list — all in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for key, fields in states:
            pipe.hmget(key, list(fields))
        for keys in distinct:
            pipe.pfcount(*keys)
        with self._reachable():
            answers = list(pipe.execute())
        return answers[: len(states)], [int(n) for n in answers[len(states) :]]

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise OnlineStoreError(f"Redis at {self.config.url} is unreachable: {exc}") from exc


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


def unpack_states(raw: Sequence[bytes | None], width: int) -> F64:
    """Stored states as rows; a missing state is a row of NaN."""
    out = np.full((len(raw), width), np.nan)
    for i, value in enumerate(raw):
        if value is not None:
            out[i] = struct.unpack(f"<{width}d", value)
    return out


@dataclass(frozen=True)
class FeatureValue:
    value: float | None
    status: str  # ok | stale (older than the view's ttl) | missing (no event in the window)
    event_time_us: int | None  # newest event in the window


def read_features(
    store: OnlineStore,
    reads: Sequence[tuple[str, int, TileLayout, Sequence[str]]],
    as_of_us: int,
) -> list[list[dict[str, FeatureValue]]]:
    """Feature values of each (view, version, layout, entity keys) at `as_of_us`, one round trip.

    Returns, per read, per entity, the view's features by name.
    """
    requests: list[tuple[str, list[str]]] = []
    distinct_requests: list[list[str]] = []
    plans: list[dict[int, list[tuple[int, str]]]] = []
    for view, version, layout, entities in reads:
        now_tile = as_of_us // layout.tile_us
        plan = {
            n: plan_window(now_tile - n + 1, now_tile)
            for n in sorted({f.window_tiles for f in layout.features})
        }
        plans.append(plan)
        by_bucket: dict[int, list[str]] = {}
        for bucket, field in sorted({item for items in plan.values() for item in items}):
            by_bucket.setdefault(bucket, []).append(field)
        prefix = store.view_prefix(view, version)
        for entity in entities:
            for bucket, fields in by_bucket.items():
                requests.append((f"{prefix}:{entity}:{bucket}", fields))
            for feature in layout.features:
                if feature.function is Function.APPROX_COUNT_DISTINCT:
                    distinct_requests.append(
                        [
                            f"{prefix}:{entity}:{bucket}:h:{feature.column}:{field}"
                            for bucket, field in plan[feature.window_tiles]
                        ]
                    )
    state_answers, distinct_answers = store.read(requests, distinct_requests)
    answers, distinct_counts = iter(state_answers), iter(distinct_answers)

    results: list[list[dict[str, FeatureValue]]] = []
    for (_view, _version, layout, entities), plan in zip(reads, plans, strict=True):
        buckets = sorted({bucket for items in plan.values() for bucket, _ in items})
        fields_of = {
            b: sorted({f for items in plan.values() for bb, f in items if bb == b}) for b in buckets
        }
        ttl = layout.view.ttl_us
        per_entity: list[dict[str, FeatureValue]] = []
        for _entity in entities:
            stored: dict[tuple[int, str], bytes | None] = {}
            for bucket in buckets:
                for field, raw in zip(fields_of[bucket], next(answers), strict=True):
                    stored[(bucket, field)] = raw
            merged_by_window = {
                n: layout.merge(unpack_states([stored[item] for item in items], layout.width))
                for n, items in plan.items()
            }
            values: dict[str, FeatureValue] = {}
            for feature in layout.features:
                merged = merged_by_window[feature.window_tiles]
                if feature.function is Function.APPROX_COUNT_DISTINCT:
                    value: float | None = float(next(distinct_counts))
                else:
                    value = layout.finalize(feature, merged)
                event_time = layout.newest(merged)
                if value is None:
                    status = "missing"
                elif ttl is not None and event_time is not None and event_time < as_of_us - ttl:
                    status = "stale"
                else:
                    status = "ok"
                values[feature.name] = FeatureValue(value, status, event_time)
            per_entity.append(values)
        results.append(per_entity)
    return results
