"""The online store: tile states in Redis, merged by a Lua script, read in one round trip.

Layout, per view version and entity:
    {ns}:{view}:{version}:{entity}:{bucket}   hash; field "<i>" = state of tile i of the bucket,
                                                field "b"   = state of the whole bucket
    {ns}:{view}:{version}:{entity}:{bucket}:h:{column}:{field}
                                               HyperLogLog of a column's values in that tile
    {ns}:{view}:{version}:{entity}:c          string; "<tile>;" + the entity's folded windows at
                                               that tile (a read cache, dropped on every write)
    {ns}:{view}:{version}:_pos                 hash; field "<partition>" = "offset:watermark"
A bucket is `BUCKET_TILES` tiles, so a long window reads whole buckets in the middle and single
tiles only at its two edges. States are packed little-endian float64 vectors (see `tiles.py`).

Exactly-once effect: one script call per batch checks that every partition's stored position is
the one the batch started from, merges all tile states, and moves the positions — atomically. A
replayed batch or a second worker racing on a revoked partition fails the check and changes
nothing.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import hiredis
import numpy as np
import numpy.typing as npt
import orjson
import redis

from featurestore.config import RedisSettings
from featurestore.definitions import Function
from featurestore.errors import OnlineStoreError
from featurestore.positions import Position
from featurestore.redis_pipe import RedisPipe, array_head, bulks, pack
from featurestore.tiles import F64, TileLayout

BUCKET_TILES = 60
BUCKET_FIELD = "b"
# Timeouts turn a hung server into an error (the worker retries, a request answers 503), not a
# silent stall.
_TIMEOUT_S = 30.0
_CONNECT_TIMEOUT_S = 5.0

# The merge rules of `TileLayout.merge`, in Lua, for both scripts below: `combine` folds the
# state `old` into `new`, in place. `code` holds the layout's merge codes, one per slot.
_LUA_COMBINE = """
local function combine(code, width, old, new)
  local i = 1
  while i <= width do
    local c = code[i]
    if c == 'a' then new[i] = old[i] + new[i]
    elseif c == 'x' then if old[i] > new[i] then new[i] = old[i] end
    elseif c == 'n' then if old[i] < new[i] then new[i] = old[i] end
    elseif c == 'L' then
      -- (time, partition, offset, value): the greater (time, partition, offset) wins
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
"""

# KEYS[1] = positions hash. ARGV: merge codes, json positions, json keys, json ttls (ms), rows blob,
# json distinct values. A row is (key index, field, state...) as float64s; field -1 is the bucket
# total. Distinct values are [key index, field, column, [values...]].
_MERGE_SCRIPT = (
    _LUA_COMBINE
    + """
local width = #ARGV[1]
local code = {}
for i = 1, width do code[i] = string.sub(ARGV[1], i, i) end
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
    combine(code, width, {struct.unpack(fmt, cur)}, new)
  end
  redis.call('HSET', key, field, struct.pack(fmt, unpack(new)))
end
local cleared = {}
for i, key in ipairs(keys) do
  redis.call('PEXPIRE', key, ttls[i])
  -- The entity's folded windows (see the fold script) no longer hold: drop them.
  local cache = string.match(key, '^(.*):') .. ':c'
  if not cleared[cache] then redis.call('DEL', cache); cleared[cache] = true end
end
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
)


# KEYS: each entity's cache key, "{ns}:{view}:{version}:{entity}:c"; the entity's hashes are
# that without ":c", then ":{bucket}". ARGV[1]: merge codes (as in the merge script); ARGV[2]:
# json list of the buckets to read; ARGV[3]: json list of their field lists; ARGV[4]: json list,
# per window (shortest first), of the 1-based positions among one entity's gathered fields of
# the states it adds to the window before it; ARGV[5]: the bytes of "no state" (NaNs); ARGV[6]:
# the read's tile, as a tag ("<tile>;"); ARGV[7]: how long a cached fold lives, ms. Returns, per
# entity and window, the window's merged state, folded here with the write path's merge rules:
# a read sends back one state per window instead of every tile, and the reading process does no
# folding at all. (Hash names are built here, not passed as KEYS: a read of 100 entities would
# send 2,500 of them, and their encoding cost the reading process more than the read.)
#
# Within one tile an entity's windows change only when its tiles are written (the far edge moves
# in whole tiles, and the merge script drops the cache of every entity it writes), so the fold is
# kept under the entity's cache key tagged with the tile, and every read in that tile until the
# next write of the entity costs one GET instead of ~25 HMGETs and the merges.
_FOLD_SCRIPT = (
    _LUA_COMBINE
    + """
local width = #ARGV[1]
local code = {}
for i = 1, width do code[i] = string.sub(ARGV[1], i, i) end
local missing = ARGV[5]
local tag = ARGV[6]
local keep_ms = ARGV[7]
local fmt = '<' .. string.rep('d', width)
local buckets, lists, windows = nil, nil, nil  -- decoded at the first entity not in the cache
local out = {}
for _, cache in ipairs(KEYS) do
  local kept = redis.call('GET', cache)
  if kept and string.sub(kept, 1, #tag) == tag then
    out[#out + 1] = string.sub(kept, #tag + 1)
  else
    if not buckets then
      buckets, lists, windows = cjson.decode(ARGV[2]), cjson.decode(ARGV[3]), cjson.decode(ARGV[4])
    end
    local base = string.sub(cache, 1, -3)
    local raw = {}
    for b, bucket in ipairs(buckets) do
      local fields = lists[b]
      local values = redis.call('HMGET', base .. ':' .. bucket, unpack(fields))
      for j = 1, #fields do raw[#raw + 1] = values[j] or false end
    end
    -- Windows are nested (shortest first, all ending now): each adds its older states to the
    -- fold of the one before.
    local folded = {}
    local acc = nil
    for _, rows in ipairs(windows) do
      for _, r in ipairs(rows) do
        if raw[r] then
          local state = {struct.unpack(fmt, raw[r])}
          if acc then combine(code, width, acc, state) end
          acc = state
        end
      end
      if acc then folded[#folded + 1] = struct.pack(fmt, unpack(acc, 1, width))
      else folded[#folded + 1] = missing end
    end
    local blob = table.concat(folded)
    out[#out + 1] = blob
    -- pcall: a Redis refusing writes (maxmemory) still answers reads, uncached.
    redis.pcall('SET', cache, tag .. blob, 'PX', keep_ms)
  end
end
return table.concat(out)
"""
)


@dataclass(frozen=True)
class Conflict:
    partition: int
    stored_offset: int


class OnlineStore:
    """Redis-backed tile states for feature views."""

    def __init__(self, config: RedisSettings) -> None:
        self.config = config
        self.namespace = config.namespace
        self.client = redis.Redis.from_url(
            config.url, socket_timeout=_TIMEOUT_S, socket_connect_timeout=_CONNECT_TIMEOUT_S
        )
        self._pipe: RedisPipe | None = None  # the async reads' connection, opened on first use
        self._merge = self.client.register_script(_MERGE_SCRIPT)
        self._fold = self.client.register_script(_FOLD_SCRIPT)

    def close(self) -> None:
        """Close the connections: the async reads' one (call this on the event loop that used
        it) and the pooled ones (a later call opens new ones)."""
        if self._pipe is not None:
            self._pipe.close()
        self.client.close()

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
        reads: Sequence[tuple[Sequence[str], _ReadPlan, TileLayout]],
        distinct: Sequence[Sequence[str]] = (),
    ) -> tuple[list[F64], list[int]]:
        """Merged window states and distinct counts, all in one round trip.

        Each read is (the cache keys of its entities, the plan they share, the layout). Returns
        per read an array (entities, windows, width) — a window without any state is a row of
        NaN — and a PFCOUNT per key list of `distinct`.
        """
        commands = self._read_commands(reads, distinct)
        with self._reachable():
            try:
                answers = self._send(commands)
            except redis.exceptions.NoScriptError:
                self.client.script_load(_FOLD_SCRIPT)  # a restarted or flushed server
                answers = self._send(commands)
        return self._read_answers(reads, answers)

    async def read_async(
        self,
        reads: Sequence[tuple[Sequence[str], _ReadPlan, TileLayout]],
        distinct: Sequence[Sequence[str]] = (),
    ) -> tuple[list[F64], list[int]]:
        """`read` on the running event loop, which goes on with other work while Redis answers:
        the commands go to one pipelined connection (redis_pipe.py) shared by concurrent reads."""
        commands = self._read_commands(reads, distinct)
        if not commands:
            return self._read_answers(reads, [])
        if self._pipe is None:
            self._pipe = RedisPipe(self.config.url, _TIMEOUT_S, _CONNECT_TIMEOUT_S)
        packed = b"".join(commands)
        with self._reachable():
            answers = await self._pipe.execute(packed, len(commands))
            if any(_no_script(answer) for answer in answers):  # a restarted or flushed server
                await self._pipe.execute(pack(b"SCRIPT", b"LOAD", _FOLD_SCRIPT.encode()), 1)
                answers = await self._pipe.execute(packed, len(commands))
        for answer in answers:
            if isinstance(answer, hiredis.ReplyError):
                raise redis.ResponseError(str(answer))
        return self._read_answers(reads, answers)

    def _read_commands(
        self,
        reads: Sequence[tuple[Sequence[str], _ReadPlan, TileLayout]],
        distinct: Sequence[Sequence[str]],
    ) -> list[bytes]:
        """A read's commands, packed here rather than by redis-py's `evalsha` or pipeline: a
        read's script arguments are the same for every read of the tile and come packed with
        the plan, and redis-py's per-command machinery cost as much as the round trip itself
        (~50 µs of ~100). EVALSHA, not redis-py's Script: that would ask SCRIPT EXISTS first, a
        second round trip."""
        sha = self._fold.sha.encode()
        commands = [
            array_head(3 + len(keys) + _FOLD_ARGS)
            + bulks((b"EVALSHA", sha, b"%d" % len(keys), *(k.encode() for k in keys)))
            + plan.script_args
            for keys, plan, _layout in reads
            if keys
        ]
        commands += [pack(b"PFCOUNT", *(k.encode() for k in keys)) for keys in distinct]
        return commands

    def _read_answers(
        self, reads: Sequence[tuple[Sequence[str], _ReadPlan, TileLayout]], answers: list[Any]
    ) -> tuple[list[F64], list[int]]:
        remaining = iter(answers)
        states = []
        for keys, plan, layout in reads:
            shape = (len(keys), len(plan.lengths), layout.width)
            if not keys:
                states.append(np.empty(shape))
                continue
            blob = next(remaining)
            flat = np.frombuffer(blob, dtype="<f8")
            if flat.size * 8 != len(blob) or flat.size != shape[0] * shape[1] * shape[2]:
                raise OnlineStoreError(
                    f"Redis at {self.config.shown_url} holds tile states of another width than "
                    f"{layout.width} floats for {keys[0][:-2]!r}: was the view changed without a "
                    "new version?"
                )
            states.append(flat.reshape(shape))
        return states, [int(n) for n in remaining]

    def _send(self, commands: list[bytes]) -> list[Any]:
        """The commands of a read, written to one pooled connection at once, and their answers."""
        if not commands:
            return []
        pool = self.client.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command([b"".join(commands)])  # type: ignore[no-untyped-call]
            answers = [connection.read_response() for _ in commands]
        except BaseException:
            # Answers may be left unread (an error answer raises): the connection is out of
            # step with the server, so it is closed rather than given back as it is.
            connection.disconnect()  # type: ignore[no-untyped-call]
            raise
        finally:
            pool.release(connection)
        return answers

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            where = self.config.shown_url
            raise OnlineStoreError(f"Redis at {where} is unreachable: {exc}") from exc


@dataclass(frozen=True, eq=False)
class _ReadPlan:
    """What a read at one tile gathers: per bucket its fields, and per window its rows."""

    windows: dict[int, list[tuple[int, str]]]  # window length -> its (bucket, field) tiles (HLLs)
    lengths: tuple[int, ...]  # window lengths, in the order the fold script returns them
    script_args: bytes  # the fold script's ARGV, packed as Redis takes them (see `_read_commands`)


_FOLD_ARGS = 7  # the fold script's ARGV count


@functools.lru_cache(maxsize=256)
def _read_plan(now_tile: int, layout: TileLayout) -> _ReadPlan:
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
    assert len(args) == _FOLD_ARGS  # noqa: S101 - the script's contract
    return _ReadPlan(windows, window_lengths, bulks(args))


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


@dataclass(frozen=True)
class FeatureValue:
    value: float | None
    status: str  # ok | stale (older than the view's ttl) | missing (no event in the window)
    event_time_us: int | None  # newest event in the window


@dataclass(frozen=True)
class ViewValues:
    """One view's features for many entities, as arrays (entities, features)."""

    features: list[str]
    values: F64  # NaN where the value is null
    event_times: F64  # newest event in the window, µs; NaN when the window holds none
    stale: npt.NDArray[np.bool_]  # the newest event is older than the view's ttl

    def statuses(self) -> list[list[str]]:
        """ok / stale / missing, per entity and feature, as `FeatureValue.status` says."""
        codes = np.where(np.isnan(self.values), 2, np.where(self.stale, 1, 0))
        names = np.array(["ok", "stale", "missing"])
        listed: list[list[str]] = names[codes].tolist()
        return listed


ViewRead = tuple[str, int, TileLayout, Sequence[str]]  # view, version, layout, entity keys


def read_views(store: OnlineStore, reads: Sequence[ViewRead], as_of_us: int) -> list[ViewValues]:
    """Feature values of each (view, version, layout, entity keys) at `as_of_us`, one round trip.

    Every entity of a read shares one plan: the (bucket, field) states covering each window.
    Redis folds them (the fold script, with the merge rules of `TileLayout.merge`) and sends one
    state per entity and window; here `TileLayout.finish` turns them into values.
    """
    state_reads, distinct = _state_reads(store, reads, as_of_us)
    states, counts = store.read(state_reads, distinct)
    return _view_values(reads, states, counts, as_of_us)


async def read_views_async(
    store: OnlineStore, reads: Sequence[ViewRead], as_of_us: int
) -> list[ViewValues]:
    """`read_views` on the running event loop (`OnlineStore.read_async`)."""
    state_reads, distinct = _state_reads(store, reads, as_of_us)
    states, counts = await store.read_async(state_reads, distinct)
    return _view_values(reads, states, counts, as_of_us)


def _state_reads(
    store: OnlineStore, reads: Sequence[ViewRead], as_of_us: int
) -> tuple[list[tuple[list[str], _ReadPlan, TileLayout]], list[list[str]]]:
    """What `OnlineStore.read` is asked for: per view, its entities' cache keys with the plan
    they share; and per entity and distinct-count feature, the HyperLogLogs of its window."""
    state_reads = []
    distinct: list[list[str]] = []
    for view, version, layout, entities in reads:
        plan = _read_plan(as_of_us // layout.tile_us, layout)
        prefix = store.view_prefix(view, version)
        keys = [f"{prefix}:{entity}:c" for entity in entities]
        state_reads.append((keys, plan, layout))
        windows = plan.windows
        for entity in entities:
            for feature in layout.features:
                if feature.function is Function.APPROX_COUNT_DISTINCT:
                    distinct.append(
                        [
                            f"{prefix}:{entity}:{bucket}:h:{feature.column}:{field}"
                            for bucket, field in windows[feature.window_tiles]
                        ]
                    )
    return state_reads, distinct


def _view_values(
    reads: Sequence[ViewRead], states: list[F64], distinct_counts: list[int], as_of_us: int
) -> list[ViewValues]:
    counts = iter(distinct_counts)
    results = []
    for (_view, _version, layout, entities), flat in zip(reads, states, strict=True):
        values, times = layout.finish(flat)
        distinct = [
            f for f, x in enumerate(layout.features) if x.function is Function.APPROX_COUNT_DISTINCT
        ]
        for e in range(len(entities)):
            for f in distinct:
                values[e, f] = next(counts)
        ttl = layout.view.ttl_us
        with np.errstate(invalid="ignore"):
            stale = (
                np.zeros(values.shape, dtype=bool) if ttl is None else times < as_of_us - ttl
            )  # NaN (no event) compares False: not stale
        names = [feature.name for feature in layout.features]
        results.append(ViewValues(names, values, times, stale))
    return results


def read_features(
    store: OnlineStore, reads: Sequence[ViewRead], as_of_us: int
) -> list[list[dict[str, FeatureValue]]]:
    """`read_views` as per-entity dicts of `FeatureValue`, for callers that want objects."""
    results = []
    for view_values in read_views(store, reads, as_of_us):
        statuses = view_values.statuses()
        per_entity = []
        for e, row in enumerate(view_values.values.tolist()):
            times = view_values.event_times[e].tolist()
            per_entity.append(
                {
                    name: FeatureValue(
                        None if math.isnan(value) else value,
                        statuses[e][f],
                        None if math.isnan(times[f]) else int(times[f]),
                    )
                    for f, (name, value) in enumerate(zip(view_values.features, row, strict=True))
                }
            )
        results.append(per_entity)
    return results


@functools.lru_cache(maxsize=64)
def _no_state(width: int) -> bytes:
    return np.full(width, np.nan).astype("<f8").tobytes()


def _no_script(answer: Any) -> bool:
    return isinstance(answer, hiredis.ReplyError) and str(answer).startswith("NOSCRIPT")
