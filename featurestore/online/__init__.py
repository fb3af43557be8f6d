"""The online store: windowed feature states in Redis, written a batch at a time by the feature
writer and read in one round trip by serving.

    base.py     `TileStore`, what the writer and readers need of a store, and what it answers
                (`StoredState`, `Merged`, `StateLost`, `ShardWrite`)
    layout.py   key names: hash tags, shards, an entity's escaped name
    store.py    `OnlineStore`, on one Redis or a Redis Cluster: batch merge per shard, reads
    scripts.py  the Lua merge and fold scripts
    plan.py     which (bucket, field) states cover each window of a read
    values.py   states turned into feature values (`read_views`, `read_features`)
Connections come from `featurestore.redis_client` (the asyncio reads through `redis_pipe`).

>>> plan_window(0, 60)  # a whole bucket, then one tile of the next
[(0, 'b'), (1, '0')]
"""

from __future__ import annotations

from featurestore.online.base import (
    Merged,
    ShardWrite,
    StateLost,
    StateRead,
    StoredState,
    TileStore,
)
from featurestore.online.layout import entity_part, shard_of
from featurestore.online.plan import (
    BUCKET_FIELD,
    BUCKET_TILES,
    LIFETIME_BUCKET,
    ReadPlan,
    plan_window,
)
from featurestore.online.store import OnlineStore
from featurestore.online.values import (
    FeatureValue,
    ViewRead,
    ViewValues,
    read_features,
    read_views,
    read_views_async,
)

__all__ = [
    "BUCKET_FIELD",
    "BUCKET_TILES",
    "FeatureValue",
    "LIFETIME_BUCKET",
    "Merged",
    "OnlineStore",
    "ReadPlan",
    "ShardWrite",
    "StateLost",
    "StateRead",
    "StoredState",
    "TileStore",
    "entity_part",
    "ViewRead",
    "ViewValues",
    "plan_window",
    "read_features",
    "read_views",
    "read_views_async",
    "shard_of",
]
