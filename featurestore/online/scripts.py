"""The online store's Lua scripts: the merge of a batch's tile states (with the move of the
partitions' positions, atomically), the fold of an entity's windows at read time, and the
announcement of the offsets a batch is about to log.

Both carry the merge rules of `TileLayout.merge` (`_LUA_COMBINE`); a change to one is a change
to the other and to `tiles.py`, checked against tests/reference.py.
"""

from __future__ import annotations

__all__ = [
    "ANNOUNCE_SCRIPT",
    "FOLD_ARGS",
    "FOLD_SCRIPT",
    "MERGE_SCRIPT",
    "NEWEST_SCRIPT",
    "PICK_SCRIPT",
    "SKETCH_SUM_SCRIPT",
]

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
    elseif c == 'F' then
      -- (time, partition, offset, value): the lesser (time, partition, offset) wins
      local older = old[i] < new[i] or (old[i] == new[i] and (old[i+1] < new[i+1] or
        (old[i+1] == new[i+1] and old[i+2] <= new[i+2])))
      if older then for j = i, i + 3 do new[j] = old[j] end end
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

# `last_n`'s per-tile lists: entries (time, partition, offset, value) packed as 4 doubles (the
# last the value's byte length) then the value's bytes, newest first by (time, partition,
# offset). Both scripts that touch them share these.
_LUA_NEWEST = """
local function decode_entries(blob)
  local out, pos = {}, 1
  while pos <= #blob do
    local t, p, o, size = struct.unpack('<dddd', blob, pos)
    pos = pos + 32
    out[#out + 1] = {t, p, o, string.sub(blob, pos, pos + size - 1)}
    pos = pos + size
  end
  return out
end
local function is_newer(a, b)
  return a[1] > b[1] or (a[1] == b[1] and (a[2] > b[2] or (a[2] == b[2] and a[3] > b[3])))
end
local function encode_newest(entries, n)
  table.sort(entries, is_newer)
  local parts = {}
  for i = 1, math.min(n, #entries) do
    local e = entries[i]
    parts[i] = struct.pack('<dddd', e[1], e[2], e[3], #e[4]) .. e[4]
  end
  return table.concat(parts)
end
"""

# One shard of a view version (featurestore/online/layout.py): every key it touches is in KEYS
# or is a suffix of one (an entity's cache, HyperLogLogs, sketches), so all share the shard's
# hash tag.
# KEYS[1] = the shard's positions hash, KEYS[2] = its rebuild marker, KEYS[3..] = the entity
# bucket hashes the rows write. ARGV: merge codes, json positions, (unused), json ttls (ms),
# rows blob, json distinct values, the epoch the writer holds ('' when it has seen none), the
# epoch to store if none is, json percentile sketch counts (see below). A row is (key index,
# field, state...) as float64s; key index 0 is KEYS[3]; field -1 is the bucket total.
# Distinct values are [key index, field, column, [values...]].
#
# Answers {1, epoch} when merged; {0, partition, stored offset} when a stored position is ahead
# of the expected one (another writer moved it: redo from there); {2, what, stored} when the
# state is not the one the writer held — its epoch changed or went, or a position is behind
# the one the writer last merged (positions only move forward; only lost writes move them
# back). Then the rebuild marker is set here, in the same atomic step, so no read in between
# reports the lost state as ok. Every position is checked before answering 0: a conflict on one
# partition must not hide a loss on another.
MERGE_SCRIPT = (
    _LUA_COMBINE
    + _LUA_NEWEST
    + """
local width = #ARGV[1]
local code = {}
for i = 1, width do code[i] = string.sub(ARGV[1], i, i) end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if ARGV[7] ~= '' and epoch ~= ARGV[7] then
  redis.call('SET', KEYS[2], 'epoch marker changed')
  return {2, 'epoch', epoch or ''}
end
local positions = cjson.decode(ARGV[2])
local conflict = nil
for _, p in ipairs(positions) do
  local stored = redis.call('HGET', KEYS[1], p[1])
  local offset = -1
  if stored then offset = tonumber(string.match(stored, '^(-?%d+):')) end
  local expected = tonumber(p[2])
  if offset < expected then
    redis.call('SET', KEYS[2], 'position moved back')
    return {2, p[1], offset}
  end
  if offset ~= expected and not conflict then conflict = {0, p[1], offset} end
end
if conflict then return conflict end
local keys = {}
for i = 3, #KEYS do keys[i - 2] = KEYS[i] end
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
  -- A ttl below 0: the entity's lifetime state, which never expires.
  if ttls[i] >= 0 then redis.call('PEXPIRE', key, ttls[i]) end
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
  if ttls[h[1] + 1] >= 0 then redis.call('PEXPIRE', hll, ttls[h[1] + 1]) end
end
-- Percentile sketches (ARGV[9], absent from older callers): [key index, field, sketch,
-- [bucket key, count, ...]] — bucket keys as strings (cjson would round big numbers).
if ARGV[9] then
  for _, q in ipairs(cjson.decode(ARGV[9])) do
    local sketch = keys[q[1] + 1] .. ':q:' .. q[3] .. ':' .. q[2]
    local pairs_ = q[4]
    for j = 1, #pairs_, 2 do
      redis.call('HINCRBY', sketch, pairs_[j], pairs_[j + 1])
    end
    if ttls[q[1] + 1] >= 0 then redis.call('PEXPIRE', sketch, ttls[q[1] + 1]) end
  end
end
-- `first` / `last` of string columns (ARGV[10]): [key index, field, column, 'first'|'last',
-- time, partition, offset, value]; a tile keeps its winner as the packed (time, partition,
-- offset) then the value's bytes.
if ARGV[10] then
  for _, x in ipairs(cjson.decode(ARGV[10])) do
    local pick = keys[x[1] + 1] .. ':s:' .. x[3] .. ':' .. x[4] .. ':' .. x[2]
    local cur = redis.call('GET', pick)
    local take = true
    if cur then
      local t, p, o = struct.unpack('<ddd', cur)
      local later = x[5] > t or (x[5] == t and (x[6] > p or (x[6] == p and x[7] > o)))
      if x[4] == 'last' then take = later else take = not later end
    end
    if take then redis.call('SET', pick, struct.pack('<ddd', x[5], x[6], x[7]) .. x[8]) end
    if ttls[x[1] + 1] >= 0 then redis.call('PEXPIRE', pick, ttls[x[1] + 1]) end
  end
end
-- `last_n` (ARGV[11]): [key index, field, column, n, [[time, partition, offset, value], ...]];
-- a tile keeps its n newest events, newest first (see `_LUA_NEWEST`).
if ARGV[11] then
  for _, x in ipairs(cjson.decode(ARGV[11])) do
    local list = keys[x[1] + 1] .. ':n:' .. x[3] .. ':' .. x[4] .. ':' .. x[2]
    local entries = decode_entries(redis.call('GET', list) or '')
    for _, e in ipairs(x[5]) do entries[#entries + 1] = e end
    redis.call('SET', list, encode_newest(entries, x[4]))
    if ttls[x[1] + 1] >= 0 then redis.call('PEXPIRE', list, ttls[x[1] + 1]) end
  end
end
for _, p in ipairs(positions) do
  redis.call('HSET', KEYS[1], p[1], p[3] .. ':' .. p[4])
end
if not epoch then
  epoch = ARGV[8]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
return {1, epoch}
"""
)

# KEYS[1] = positions hash. ARGV: partition, offset, partition, offset... Each partition's
# announced offset ("a:<partition>") becomes the greater of the stored and the given one, so a
# writer replaying an older batch never lowers what a newer one announced.
ANNOUNCE_SCRIPT = """
for i = 1, #ARGV, 2 do
  local field = 'a:' .. ARGV[i]
  local stored = redis.call('HGET', KEYS[1], field)
  if not stored or tonumber(stored) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], field, ARGV[i + 1])
  end
end
return 1
"""


# KEYS: each entity's cache key, "{ns}:{view}:{version}:{entity}:c"; the entity's hashes are
# that without ":c", then ":{bucket}". ARGV[1]: merge codes (as in the merge script); ARGV[2]:
# json list of the buckets to read; ARGV[3]: json list of their field lists; ARGV[4]: json list,
# per window (in `TileLayout.windows` order), of the 1-based positions among one entity's
# gathered fields of the states it adds to the window before it, led by a 0 when it starts
# afresh instead; ARGV[5]: the bytes of "no state" (NaNs); ARGV[6]:
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
FOLD_SCRIPT = (
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
    -- Windows that end on the same tile come shortest first: each adds its older states to
    -- the fold of the one before. A row 0 starts a window afresh (it ends elsewhere: another
    -- step or offset, or the lifetime state).
    local folded = {}
    local acc = nil
    for _, rows in ipairs(windows) do
      for _, r in ipairs(rows) do
        if r == 0 then acc = nil
        elseif raw[r] then
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


FOLD_ARGS = 7  # the fold script's ARGV count


# KEYS: the percentile sketch hashes of one window of one entity (all of one shard: one slot),
# "<bucket hash>:q:<column>:<accuracy>:<field>". Returns their bucket counts summed, as a flat
# [bucket key, count, ...] (keys as Redis holds them: strings). A window's sketch is that sum.
SKETCH_SUM_SCRIPT = """
local total = {}
local order = {}
for _, key in ipairs(KEYS) do
  local flat = redis.call('HGETALL', key)
  for j = 1, #flat, 2 do
    local k = flat[j]
    if total[k] then total[k] = total[k] + tonumber(flat[j + 1])
    else total[k] = tonumber(flat[j + 1]); order[#order + 1] = k end
  end
end
local out = {}
for _, k in ipairs(order) do
  out[#out + 1] = k
  out[#out + 1] = string.format('%d', total[k])
end
return out
"""


# KEYS: the `first` / `last` values of one string column in one window of one entity (one
# slot), "<bucket hash>:s:<column>:<first|last>:<field>"; ARGV[1]: 'first' or 'last'. Returns
# the value of the winning event — the least (first) or greatest (last) (time, partition,
# offset) — or nil when no tile holds one.
PICK_SCRIPT = """
local best, value = nil, nil
for _, key in ipairs(KEYS) do
  local cur = redis.call('GET', key)
  if cur then
    local t, p, o = struct.unpack('<ddd', cur)
    local better = true
    if best then
      local later = t > best[1] or
        (t == best[1] and (p > best[2] or (p == best[2] and o > best[3])))
      if ARGV[1] == 'last' then better = later else better = not later end
    end
    if better then best = {t, p, o}; value = string.sub(cur, 25) end
  end
end
return value
"""


# KEYS: the `last_n` lists of one column in one window of one entity (one slot),
# "<bucket hash>:n:<column>:<n>:<field>"; ARGV[1]: n. Returns the values of the window's n
# newest events, newest first (an empty array when it holds none).
NEWEST_SCRIPT = (
    _LUA_NEWEST
    + """
local entries = {}
for _, key in ipairs(KEYS) do
  local blob = redis.call('GET', key)
  if blob then
    for _, e in ipairs(decode_entries(blob)) do entries[#entries + 1] = e end
  end
end
table.sort(entries, is_newer)
local out = {}
for i = 1, math.min(tonumber(ARGV[1]), #entries) do out[i] = entries[i][4] end
return out
"""
)
