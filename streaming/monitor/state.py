"""The monitor's state in Redis: consumed positions, open windows, the label join, markers.

Layout, under `<ns>:{drift}:monitor:<group>` (P): in the drift state's hash tag
(featurestore/drift/state.py), so on a Redis Cluster every key here and the drift keys the
commit script writes share one slot, and the scripts may touch them together:
    P:state            hash; "pos:{topic}:{partition}" = "offset:watermark", "closed" = start
                       of the first drift window not yet reported, "performed" = the same for
                       live performance, "rev" = merges so far
    P:w:{start}        hash; "{model}|{version}|{role}|{kind}|{column}" = packed accumulator
    P:windows          sorted set of the window starts that have a P:w hash
    P:idx:{bucket}     hash, the prediction index of the label join (bucket = at // horizon):
                       "r:{request id}" = lines "entity key, model, version, role, score, at",
                       "e:{entity key}" = lines "at, request id"
    P:buckets          sorted set of the index buckets
    P:labels           sorted set of labels waiting to be joined (score: the label's time)
    P:pairs:{start}    hash; "{model}|{version}|{role}" = lines "score label" of the joined
                       labels of the predictions made in that window
    P:paired           sorted set of the windows that have a P:pairs hash

Expiry: what only a bounded span of the stream still needs gets a TTL (`finished_ttl_ms`): the
P:idx buckets (each write), the closed windows kept for the sliding statistics and the P:pairs
hashes (each closing step). The closing step deletes them once the watermark has passed that
span; the TTL is what frees them when it never does (a monitor group stopped for good, or
stopped longer than `monitor.state_grace`: then the next closing step logs what it misses).
What replay needs never expires: P:state (positions and markers), the open windows (their
records' positions have moved on) and the labels waiting to be joined.

Exactly-once counting: one script call per batch checks that every partition's stored position
is the one the batch started from (and that no window was closed meanwhile), merges the
batch's accumulators, appends its index lines and pending labels, and moves the positions —
atomically, as `featurestore/online/store.py` merges tiles. Closing windows is one more call that
checks the markers and `rev` it read, then writes the reports and moves the markers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from featurestore.config import MonitorSettings, RedisSettings
from featurestore.drift.state import DRIFT_TAG_PREFIX
from featurestore.positions import NO_POSITION, Position, PositionConflict
from featurestore.redis_client import STORE, make_client, redis_errors

__all__ = ["Closing", "MonitorState", "Snapshot", "WindowClosed", "finished_ttl_ms"]

# KEYS[1] = state hash. ARGV: prefix, json positions [[field, old offset, new offset, watermark]],
# expected "closed" ("" if none), json accumulators [[window, field, floats]], their blob,
# json index appends [[bucket, field, text]], json pending labels [[score, member]], the TTL of
# index buckets (ms).
_MERGE_SCRIPT = """
local state, prefix = KEYS[1], ARGV[1]
local positions = cjson.decode(ARGV[2])
for _, p in ipairs(positions) do
  local stored = redis.call('HGET', state, p[1])
  local offset = -1
  if stored then offset = tonumber(string.match(stored, '^(-?%d+):')) end
  if offset ~= tonumber(p[2]) then return {0, 'position', p[1], offset} end
end
local closed = redis.call('HGET', state, 'closed') or ''
if closed ~= ARGV[3] then return {0, 'closed', closed} end
local blob, pos, windows = ARGV[5], 1, {}
for _, s in ipairs(cjson.decode(ARGV[4])) do
  local n = s[3]
  local fmt = '<' .. string.rep('d', n)
  local new = {struct.unpack(fmt, blob, pos)}
  pos = pos + 8 * n
  local key = prefix .. ':w:' .. s[1]
  local cur = redis.call('HGET', key, s[2])
  if cur then
    local old = {struct.unpack(fmt, cur)}
    for i = 1, n do
      -- fields 6 and 7 (1-based) are min and max; every other field adds up
      if i == 6 then
        if old[i] < new[i] then new[i] = old[i] end
      elseif i == 7 then
        if old[i] > new[i] then new[i] = old[i] end
      else
        new[i] = old[i] + new[i]
      end
    end
  end
  redis.call('HSET', key, s[2], struct.pack(fmt, unpack(new, 1, n)))
  windows[s[1]] = true
end
for w, _ in pairs(windows) do redis.call('ZADD', prefix .. ':windows', w, w) end
local buckets = {}
for _, e in ipairs(cjson.decode(ARGV[6])) do
  local key = prefix .. ':idx:' .. e[1]
  local cur = redis.call('HGET', key, e[2]) or ''
  redis.call('HSET', key, e[2], cur .. e[3])
  buckets[e[1]] = key
end
for b, key in pairs(buckets) do
  redis.call('PEXPIRE', key, ARGV[8])
  redis.call('ZADD', prefix .. ':buckets', b, b)
end
for _, l in ipairs(cjson.decode(ARGV[7])) do
  redis.call('ZADD', prefix .. ':labels', l[1], l[2])
end
for _, p in ipairs(positions) do
  redis.call('HSET', state, p[1], p[3] .. ':' .. p[4])
end
redis.call('HINCRBY', state, 'rev', 1)
return {1}
"""

# KEYS[1] = state hash. ARGV: expected closed, performed, rev ("" if none); new closed and
# performed; json ops, each [command, key, args...] with command one of those below.
_COMMIT_SCRIPT = """
local state = KEYS[1]
local function get(f) return redis.call('HGET', state, f) or '' end
if get('closed') ~= ARGV[1] or get('performed') ~= ARGV[2] or get('rev') ~= ARGV[3] then
  return 0
end
for _, op in ipairs(cjson.decode(ARGV[6])) do
  local c = op[1]
  if c == 'hset' then redis.call('HSET', op[2], op[3], op[4])
  elseif c == 'hdel' then redis.call('HDEL', op[2], op[3])
  elseif c == 'happend' then
    redis.call('HSET', op[2], op[3], (redis.call('HGET', op[2], op[3]) or '') .. op[4])
  elseif c == 'del' then redis.call('DEL', op[2])
  elseif c == 'zadd' then redis.call('ZADD', op[2], op[3], op[4])
  elseif c == 'zrem' then redis.call('ZREM', op[2], op[3])
  elseif c == 'sadd' then redis.call('SADD', op[2], op[3])
  elseif c == 'pexpire' then redis.call('PEXPIRE', op[2], op[3])
  else return redis.error_reply('unknown op ' .. tostring(c)) end
end
if ARGV[4] ~= '' then redis.call('HSET', state, 'closed', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', state, 'performed', ARGV[5]) end
return 1
"""


def finished_ttl_ms(config: MonitorSettings) -> int:
    """The TTL (ms) of the monitor's finished keys, from their last write.

    The longest stretch of event time one serves: a closed window, the sliding windows that
    end after it; an index bucket (one horizon of predictions), the labels up to two horizons
    on, until their windows close; joined pairs, less. The closing step trails the stream by
    the allowed lateness, and by the idle timeout when a partition idles; `state_grace` is the
    margin for a monitor that stops. Event time that runs faster than the wall clock (a
    backlog) only frees keys sooner, through the closing step.

    >>> finished_ttl_ms(MonitorSettings(window="1m", sliding_windows=3, label_horizon="10m",
    ...     allowed_lateness="0s", idle_timeout="1m", state_grace="1h")) // 60_000
    82
    """
    serves = max(
        config.sliding_windows * config.window_us, 2 * config.horizon_us + config.window_us
    )
    return (serves + config.lateness_us + config.idle_timeout_us + config.state_grace_us) // 1000


@dataclass(frozen=True)
class Snapshot:
    """The markers and positions as one read saw them."""

    positions: dict[tuple[str, int], Position]
    closed: int | None  # start of the first drift window not reported yet
    performed: int | None  # the same for live performance
    rev: str

    def marks(self, topic: str) -> dict[int, Position]:
        """The stored position of each partition of `topic` that has one."""
        return {p: position for (t, p), position in self.positions.items() if t == topic}


@dataclass(frozen=True)
class WindowClosed:
    """Why a batch's merge changed nothing: a drift window was closed (by this monitor's
    closing step, or another consumer's) since the snapshot the batch started from."""

    closed: int | None  # the stored marker: start of the first window not yet reported


@dataclass
class Closing:
    """What a closing step read: window accumulators, labels ready to join, pairs."""

    rev: str
    windows: dict[int, dict[str, bytes]] = field(default_factory=dict)
    labels: list[tuple[bytes, int]] = field(default_factory=list)  # (member, time)
    pairs: dict[int, dict[str, bytes]] = field(default_factory=dict)
    expired: int = 0  # closed windows and pairs listed but gone (their TTL ran out)


class MonitorState:
    def __init__(
        self, config: RedisSettings, group: str, monitor: MonitorSettings | None = None
    ) -> None:
        self.config = config
        self.ttl_ms = finished_ttl_ms(monitor or MonitorSettings())
        self.prefix = f"{DRIFT_TAG_PREFIX.format(namespace=config.namespace)}:monitor:{group}"
        self.state_key = f"{self.prefix}:state"
        self.client = make_client(config, STORE)
        self._merge = self.client.register_script(_MERGE_SCRIPT)
        self._commit = self.client.register_script(_COMMIT_SCRIPT)

    def window_key(self, start: int) -> str:
        return f"{self.prefix}:w:{start}"

    def bucket_key(self, bucket: int) -> str:
        return f"{self.prefix}:idx:{bucket}"

    def pairs_key(self, start: int) -> str:
        return f"{self.prefix}:pairs:{start}"

    @property
    def labels_key(self) -> str:
        return f"{self.prefix}:labels"

    def snapshot(self) -> Snapshot:
        with redis_errors(self.config):
            raw = self.client.hgetall(self.state_key)
        positions: dict[tuple[str, int], Position] = {}
        values: dict[str, str] = {}
        for key, value in raw.items():
            name, text = _text(key), _text(value)
            if name.startswith("pos:"):
                topic, partition = name[4:].rsplit(":", 1)
                offset, watermark = text.split(":")
                positions[(topic, int(partition))] = Position(int(offset), int(watermark))
            else:
                values[name] = text
        return Snapshot(
            positions,
            int(values["closed"]) if "closed" in values else None,
            int(values["performed"]) if "performed" in values else None,
            values.get("rev", ""),
        )

    def position(self, snapshot: Snapshot, topic: str, partition: int) -> Position:
        return snapshot.positions.get((topic, partition), NO_POSITION)

    def merge(
        self,
        moves: dict[tuple[str, int], tuple[Position, Position]],
        closed: int | None,
        accumulators: Sequence[tuple[int, str, np.ndarray]],
        index: dict[tuple[int, str], str],
        labels: Sequence[tuple[int, bytes]],
    ) -> PositionConflict | WindowClosed | None:
        """Apply one batch and move the positions, or change nothing and say why: a stored
        position is not the one the batch started from, or a window closed meanwhile."""
        positions = [
            [f"pos:{topic}:{partition}", str(old.offset), str(new.offset), str(new.watermark)]
            for (topic, partition), (old, new) in moves.items()
        ]
        # Window starts and scores as strings: Lua numbers would print 1.77e+15.
        spec = [[str(w), name, int(v.size)] for w, name, v in accumulators]
        blob = b"".join(np.ascontiguousarray(v, dtype="<f8").tobytes() for _, _, v in accumulators)
        appends = [[str(bucket), name, text] for (bucket, name), text in index.items()]
        pending = [[str(score), member.decode()] for score, member in labels]
        with redis_errors(self.config):
            result = self._merge(
                keys=[self.state_key],
                args=[
                    self.prefix,
                    orjson.dumps(positions),
                    "" if closed is None else str(closed),
                    orjson.dumps(spec),
                    blob,
                    orjson.dumps(appends),
                    orjson.dumps(pending),
                    str(self.ttl_ms),
                ],
            )
        if int(result[0]) == 1:
            return None
        if _text(result[1]) == "position":  # [0, "position", "pos:{topic}:{partition}", offset]
            topic, partition = _text(result[2])[4:].rsplit(":", 1)
            return PositionConflict(int(partition), int(result[3]), topic)
        marker = _text(result[2])  # [0, "closed", the stored marker or ""]
        return WindowClosed(int(marker) if marker else None)

    def read_closing(
        self, windows_until: int, labels_until: int, pairs_until: int | None
    ) -> Closing:
        """Accumulators of the windows starting before `windows_until`, labels up to
        `labels_until` and the pairs of the windows before `pairs_until`, as of one moment."""
        with redis_errors(self.config):
            pipe = self.client.pipeline(transaction=True)
            pipe.zrangebyscore(f"{self.prefix}:windows", "-inf", f"({windows_until}")
            pipe.zrangebyscore(f"{self.prefix}:paired", "-inf", f"({pairs_until or 0}")
            starts, paired = pipe.execute()
            pipe = self.client.pipeline(transaction=True)
            pipe.hget(self.state_key, "rev")
            for start in starts:
                pipe.hgetall(self.window_key(int(start)))
            for start in paired if pairs_until is not None else []:
                pipe.hgetall(self.pairs_key(int(start)))
            pipe.zrangebyscore(self.labels_key, "-inf", labels_until, withscores=True)
            answers = pipe.execute()
        rev = answers[0].decode() if answers[0] else ""
        out = Closing(rev)
        hashes = iter(answers[1:-1])
        for start in starts:
            out.windows[int(start)] = {k.decode(): v for k, v in next(hashes).items()}
        for start in paired if pairs_until is not None else []:
            out.pairs[int(start)] = {k.decode(): v for k, v in next(hashes).items()}
        # Listed yet empty: expired (a window or pairs hash is never written empty).
        out.expired = sum(not v for v in (*out.windows.values(), *out.pairs.values()))
        out.labels = [(member, int(score)) for member, score in answers[-1]]
        return out

    def index_lines(self, lookups: Sequence[tuple[int, str]]) -> list[bytes | None]:
        """The index fields (bucket, field) asked for, in order."""
        if not lookups:
            return []
        with redis_errors(self.config):
            pipe = self.client.pipeline(transaction=False)
            for bucket, name in lookups:
                pipe.hget(self.bucket_key(bucket), name)
            return list(pipe.execute())

    def buckets_before(self, bucket: int) -> list[int]:
        with redis_errors(self.config):
            found = self.client.zrangebyscore(f"{self.prefix}:buckets", "-inf", f"({bucket}")
        return [int(_text(b)) for b in found]

    def commit(
        self, seen: Snapshot, rev: str, closed: int | None, performed: int | None, ops: list[Any]
    ) -> bool:
        """Write `ops` and move the markers, if nothing moved them (or merged) since `seen`."""
        with redis_errors(self.config):
            done = self._commit(
                keys=[self.state_key],
                args=[
                    "" if seen.closed is None else str(seen.closed),
                    "" if seen.performed is None else str(seen.performed),
                    rev,
                    "" if closed is None else str(closed),
                    "" if performed is None else str(performed),
                    orjson.dumps(ops),
                ],
            )
        return int(done) == 1


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
