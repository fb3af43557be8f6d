"""Exactly-once across shards: a writer killed between two shards' scripts leaves shards at
different positions; a new writer resumes each partition from the lowest, gives each shard only
what it lacks, and the values equal the brute-force reference over every event once — whatever
shards the crash left behind and however the replay is cut into batches."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.config import OfflineSettings, RedisSettings
from featurestore.offline.log import OfflineStore
from featurestore.online import OnlineStore, ShardWrite
from featurestore.positions import NO_POSITION
from featurestore.writer import ViewWriter
from tests.featurestore.test_state_loss import VIEW, assert_reference, random_batches
from tests.featurestore.test_writer import as_batch
from tests.redis_target import delete_matching

pytestmark = pytest.mark.integration

SHARDS = 4


class Killed(Exception):
    """The writer process dies between two shards' scripts."""


@contextmanager
def sharded(url: str, root: Path) -> Iterator[tuple[OnlineStore, OfflineStore]]:
    namespace = f"test:{uuid.uuid4().hex[:12]}"
    online = OnlineStore(RedisSettings(url=url, namespace=namespace, shards=SHARDS))
    try:
        yield online, OfflineStore(OfflineSettings(root=root))
    finally:
        delete_matching(online.client, f"{namespace}:*")
        online.close()


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 10_000),
    survivors=st.sets(st.integers(0, SHARDS - 1), max_size=SHARDS - 1),
    cut=st.integers(1, 159),
)
def test_a_crash_between_shards_is_replayed_exactly_once(
    redis: str, tmp_path_factory: pytest.TempPathFactory, seed: int, survivors: set[int], cut: int
) -> None:
    events, batches = random_batches(seed, [100, 80, 80])
    with sharded(redis, tmp_path_factory.mktemp("log")) as (online, offline):
        writer = ViewWriter(online, offline, VIEW, 1)
        writer.load_positions()
        writer.apply(batches[0], batches[0].last_offsets())

        # The second batch reaches only the `survivors` shards, then the process dies.
        merge = online.merge_shards

        def dies(view: str, version: int, layout: Any, writes: Sequence[ShardWrite]) -> Any:
            kept = [w for w in writes if w.shard in survivors]
            if kept:
                merge(view, version, layout, kept)
            raise Killed

        online.merge_shards = dies  # type: ignore[method-assign]
        with pytest.raises(Killed):
            writer.apply(batches[1], batches[1].last_offsets())
        online.merge_shards = merge  # type: ignore[method-assign]
        stands = online.state(VIEW.name, 1).shards
        for shard, positions in enumerate(stands):
            batch = batches[1] if shard in survivors else batches[0]
            assert {p: at.offset for p, at in positions.items()} == batch.last_offsets()

        # A new writer resumes from the lowest shard position; Kafka hands it the events from
        # there, cut differently than the first time (a cut may end inside what the survivors
        # hold, or past it: they take only the events past their own positions).
        fresh = ViewWriter(online, offline, VIEW, 1)
        resume = fresh.load_positions()
        assert fresh.rebuilds == 0
        rest = [e for e in events if e.offset > resume.get(e.partition, NO_POSITION).offset]
        head, tail = rest[:cut], rest[cut:]
        for part in (head, tail):
            if part:
                batch = as_batch(part)
                fresh.apply(batch, batch.last_offsets())
        assert_reference(online, events)
        # Every shard ends at the same positions: the end of the stream.
        final = online.state(VIEW.name, 1)
        assert all(s == final.shards[0] for s in final.shards)
