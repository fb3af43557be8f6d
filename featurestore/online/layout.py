"""Where the online store keeps a view version's state: its key names, and which shard holds an
entity.

A view version's entities are spread over S shards (`RedisSettings.shard_count`: 1 on one Redis,
16 on a cluster by default) by a stable hash of the entity key mod S. Every key of a shard
starts with `ns:{view:version:shard}` — the namespace, then the hash tag — so Redis Cluster
keeps a shard in one slot: each script of ours touches one shard only, and a cluster spreads a
view over its nodes by shard; and every key still starts with the namespace. Namespaces and
view names hold no brace (config.py, definitions.py). Per shard (T = the prefix up to the tag's
closing brace):

    T:{E}:{bucket}                       hash; field "<i>" = state of tile i of the bucket,
                                         field "b" = state of the whole bucket
    T:{E}:{bucket}:h:{column}:{field}    HyperLogLog of a column's values in that tile
    T:{E}:life                           hash; field "b" = the entity's lifetime state (all
                                         its events; never expires), only for a view with a
                                         lifetime window
    T:{E}:life:h:{column}:b              its HyperLogLog of a column's values (never expires)
    T:{E}:{bucket}:q:{sketch}:{field}    hash; counts of that tile: a percentile sketch's
                                         bucket key -> count (featurestore/percentiles.py;
                                         {sketch} is `sketch_name`, "{column}:{accuracy}"), or
                                         `top_k`'s value -> count ("{column}:values",
                                         featurestore/frequencies.py)
    T:{E}:{bucket}:s:{column}:{first|last}:{field}
                                         string; the tile's first / last event of a string
                                         column: packed (time, partition, offset), then value
    T:{E}:{bucket}:n:{column}:{n}:{field}
                                         string; `last_n`: the tile's n newest events, newest
                                         first (online/scripts.py `_LUA_NEWEST`)
    T:{E}:c                              string; "<tile>;" + the entity's folded windows at that
                                         tile (a read cache, dropped on every write)
    T:_pos                               hash; "<partition>" = "offset:watermark" of this shard,
                                         "epoch" = the shard's epoch marker (random, set with
                                         its first position), "a:<partition>" = the newest
                                         offset a writer announced it logs (shard 0 only)
    T:_rebuild                           string; set while the shard's state is being rebuilt

{E} is the entity key (featurestore/keys.py) with `%` and `:` written as `%25` and `%3A`, so it
holds no `:` and every name splits one way only: an entity "a:5:h:x" can never meet the
HyperLogLog of entity "a" (it did before shards). An entity without either character reads as
itself.

>>> entity_part("u1"), entity_part("a:5%")
('u1', 'a%3A5%25')
>>> shard_tag("fs", "user_txn", 3, 0)
'fs:{user_txn:3:0}'
>>> [shard_of(e, 16) for e in ("u1", "u2")], shard_of("u1", 1)
([6, 12], 0)
"""

from __future__ import annotations

import zlib

__all__ = [
    "POSITIONS",
    "REBUILD",
    "entity_part",
    "shard_of",
    "shard_tag",
    "sketch_name",
    "tag_of",
]

POSITIONS = "_pos"
REBUILD = "_rebuild"


def entity_part(entity: str) -> str:
    """An entity key as it appears in a Redis key name: without `:` (escaped)."""
    if "%" not in entity and ":" not in entity:
        return entity
    return entity.replace("%", "%25").replace(":", "%3A")


def shard_of(entity: str, shards: int) -> int:
    """The shard of an entity: CRC-32 of its key mod `shards` (stable across processes and
    versions of Python, unlike `hash`)."""
    if shards == 1:
        return 0
    return zlib.crc32(entity.encode()) % shards


def shard_tag(namespace: str, view: str, version: int, shard: int) -> str:
    """The prefix, up to its hash tag, of every key of one shard of a view version."""
    return f"{namespace}:{{{view}:{version}:{shard}}}"


def tag_of(key: str) -> str:
    """A key of ours up to its hash tag's end (the tag decides its cluster slot)."""
    return key[: key.index("}") + 1]


def sketch_name(column: str, accuracy: float) -> str:
    """A percentile sketch's part of its keys' names: its column and accuracy (repr: exact).

    >>> sketch_name("amount", 0.01)
    'amount:0.01'
    """
    return f"{column}:{accuracy!r}"
