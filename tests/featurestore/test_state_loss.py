"""Redis losing a view's state, for real, under the writer: the namespace wiped, a replica that
stopped replicating promoted in its place, an older state restored under a running writer, a
crash between the log append and the merge. Each loss is found (and only a loss), the state is
rebuilt from the offline log, and every value equals the brute-force reference over all the
events applied; reads during the rebuild say `rebuilding`.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis as redis_lib

from featurestore.config import OfflineSettings, RedisSettings
from featurestore.events import EventBatch
from featurestore.keys import entity_key
from featurestore.offline.log import SCAN_ROWS, OfflineStore, event_table
from featurestore.online import OnlineStore, read_features
from featurestore.positions import Position
from featurestore.tiles import TileLayout
from featurestore.writer import ViewWriter
from tests.featurestore.test_writer import ENTITIES, VIEW, as_batch, make_events
from tests.own_redis import own_redis
from tests.redis_target import CLUSTER, delete_matching
from tests.reference import Event, apply_lateness, view_features

pytestmark = pytest.mark.integration

US = 1_000_000
LAYOUT = TileLayout(VIEW)
KEYS = [entity_key(e) for e in ENTITIES]


def random_batches(seed: int, sizes: list[int]) -> tuple[list[Event], list[EventBatch]]:
    """Events over three partitions (some late, some on tile edges), cut into `sizes`; every
    batch holds events of every partition."""
    rng = random.Random(seed)
    spec = [
        (
            rng.randint(-2_400, -301) if rng.random() < 0.05 else rng.randint(-150, 150),
            rng.random() < 0.05,
            i % 3,
            rng.randrange(len(ENTITIES)),
            rng.randint(-500, 500) / 4,
        )
        for i in range(sum(sizes))
    ]
    events = make_events(spec)
    bounds = np.cumsum([0, *sizes]).tolist()
    return events, [as_batch(events[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


def assert_reference(online: OnlineStore, events: list[Event]) -> None:
    """Every feature of every entity equals the brute-force value over the applied events."""
    applied, _late = apply_lateness(events, VIEW.lateness_us)
    newest = max(e.ts for e in events)
    for later in (0, 20 * 60, 100 * 60):
        as_of = newest + later * US
        [got] = read_features(online, [(VIEW.name, 1, LAYOUT, KEYS)], as_of)
        for entity, features in zip(ENTITIES, got, strict=True):
            mine = [e for e in applied if (e.values["user_id"], e.values["card"]) == entity]
            for name, want in view_features(mine, VIEW, as_of).items():
                value = features[name]
                assert value.status in {"ok", "stale", "missing"}, (entity, name, value)
                assert value.value == (None if want is None else pytest.approx(want, abs=1e-9))


@contextmanager
def namespace(url: str, root: Path) -> Iterator[tuple[OnlineStore, OfflineStore]]:
    online = OnlineStore(RedisSettings(url=url, namespace=f"test:{uuid.uuid4().hex[:12]}"))
    try:
        yield online, OfflineStore(OfflineSettings(root=root))
    finally:
        wipe(online)
        online.close()


def wipe(online: OnlineStore) -> None:
    """Every key of the store's namespace deleted: Redis come back empty, for this namespace."""
    delete_matching(online.client, f"{online.namespace}:*")


def dump(online: OnlineStore) -> dict[bytes, tuple[int, bytes]]:
    """Every key of the namespace, serialized with its time to live: a state to go back to."""
    out = {}
    for key in online.client.scan_iter(match=f"{online.namespace}:*", count=1000):
        value = online.client.dump(key)
        assert isinstance(value, bytes)
        out[key] = (max(int(online.client.pttl(key)), 0), value)
    return out


def restore(online: OnlineStore, state: dict[bytes, tuple[int, bytes]]) -> None:
    wipe(online)
    for key, (ttl, value) in state.items():
        online.client.restore(key, ttl, value)


def assert_stands_as_before(
    rebuilt: dict[int, Position], before: dict[int, Position], offline: OfflineStore
) -> None:
    """A rebuilt version stands at the log's newest offset of each partition (the positions
    before may be past it: a batch's last events late, or not events at all), with the same
    watermarks: late events never moved one."""
    log = offline.read_events(VIEW.name, 1)
    newest: dict[int, int] = {}
    for p, o in zip(log["_partition"].to_pylist(), log["_offset"].to_pylist(), strict=True):
        newest[p] = max(newest.get(p, -1), o)
    assert {p: at.offset for p, at in rebuilt.items()} == newest
    assert {p: at.watermark for p, at in rebuilt.items()} == {
        p: at.watermark for p, at in before.items()
    }
    assert all(at.offset <= before[p].offset for p, at in rebuilt.items())


def apply_all(writer: ViewWriter, batches: list[EventBatch]) -> None:
    for batch in batches:
        writer.apply(batch, batch.last_offsets())


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="fstore.writer")
    return caplog


def rebuilt(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "rebuilt from the offline log" in r.message]


def test_a_wiped_state_is_rebuilt_when_a_writer_loads_and_when_a_running_one_merges(
    redis: str, tmp_path: Path, warnings: pytest.LogCaptureFixture
) -> None:
    events, batches = random_batches(1, [120, 90, 150, 60])
    with namespace(redis, tmp_path) as (online, offline):
        writer = ViewWriter(online, offline, VIEW, 1)
        writer.load_positions()
        apply_all(writer, batches[:2])
        assert writer.rebuilds == 0 and not rebuilt(warnings)
        stood = dict(writer.positions)

        # Redis restarted empty: a writer starting now finds positions gone while the log holds
        # applied events, and rebuilds before it says where the version stands.
        wipe(online)
        fresh = ViewWriter(online, offline, VIEW, 1)
        assert_stands_as_before(fresh.load_positions(), stood, offline)
        assert fresh.rebuilds == 1
        assert "Redis holds no position of it" in warnings.text
        assert len(rebuilt(warnings)) == 1
        assert_reference(online, [e for b in batches[:2] for e in events_of(b, events)])

        # The first writer still runs, holding the epoch that is gone: its next merge is
        # refused, it rebuilds, then applies its batch.
        wipe(online)
        done = writer.apply(batches[2], batches[2].last_offsets())
        assert writer.rebuilds == 1
        assert done.applied + len(done.late) == len(batches[2])  # the batch's own count
        assert "its epoch marker is gone" in warnings.text
        apply_all(writer, batches[3:])
        assert_reference(online, events)
        assert online.state(VIEW.name, 1).rebuilding is None
        # The log holds no event twice for it: the replay did not log what it replayed.
        log = offline.read_events(VIEW.name, 1)
        files = offline.view_dir(VIEW.name, 1).glob("*/*.parquet")
        assert sum(pq.read_metadata(f).num_rows for f in files) == log.num_rows


def events_of(batch: EventBatch, events: list[Event]) -> list[Event]:
    where = set(zip(batch.partition.tolist(), batch.offset.tolist(), strict=True))
    return [e for e in events if (e.partition, e.offset) in where]


@pytest.mark.skipif(CLUSTER, reason="starts its own single master and replica")
def test_a_replica_that_lagged_promoted_in_the_masters_place_is_caught_up_from_the_log(
    tmp_path: Path, warnings: pytest.LogCaptureFixture
) -> None:
    """A real replica, detached after the first batch (it lags by two), then promoted: a
    writer on it finds its positions behind the log and replays the rest."""
    events, batches = random_batches(2, [100, 120, 80])
    with (
        own_redis(tmp_path / "master", "--appendonly", "no") as master,
        own_redis(tmp_path / "replica", "--appendonly", "no") as replica,
    ):
        replica.client().replicaof("127.0.0.1", master.port)
        namespace_ = f"test:{uuid.uuid4().hex[:12]}"
        offline = OfflineStore(OfflineSettings(root=tmp_path / "offline"))
        on_master = OnlineStore(RedisSettings(url=master.url, namespace=namespace_))
        writer = ViewWriter(on_master, offline, VIEW, 1)
        writer.load_positions()
        writer.apply(batches[0], batches[0].last_offsets())
        after_first = dict(writer.positions)
        assert wait_replicated(master.client(), replica.client())
        replica.client().replicaof("NO", "ONE")  # from now on it lags
        apply_all(writer, batches[1:])

        on_replica = OnlineStore(RedisSettings(url=replica.url, namespace=namespace_))
        assert on_replica.positions(VIEW.name, 1) == after_first != writer.positions
        failed_over = ViewWriter(on_replica, offline, VIEW, 1)
        assert_stands_as_before(failed_over.load_positions(), writer.positions, offline)
        assert failed_over.rebuilds == 1
        assert "positions are behind the offline log" in warnings.text
        assert_reference(on_replica, events)
        on_master.close()
        on_replica.close()


def wait_replicated(master: redis_lib.Redis, replica: redis_lib.Redis) -> bool:
    for _ in range(200):
        if replica.info("replication").get("master_link_status") == "up":
            return int(master.wait(1, 10_000)) == 1
        time.sleep(0.05)
    return False


def test_positions_moved_back_under_a_running_writer_are_a_loss(
    redis: str, tmp_path: Path, warnings: pytest.LogCaptureFixture
) -> None:
    """An older, consistent state (what a failover to a lagging replica leaves) restored under
    a running writer: the merge finds a position behind the one it merged; the rebuild replays
    what the older state lacks, and the batch goes on."""
    events, batches = random_batches(3, [80, 100, 90, 70])
    with namespace(redis, tmp_path) as (online, offline):
        writer = ViewWriter(online, offline, VIEW, 1)
        writer.load_positions()
        writer.apply(batches[0], batches[0].last_offsets())
        older = dump(online)
        apply_all(writer, batches[1:3])
        restore(online, older)
        writer.apply(batches[3], batches[3].last_offsets())
        assert writer.rebuilds == 1
        assert "behind the" in warnings.text
        assert_reference(online, events)


def test_a_crash_between_the_log_append_and_the_merge_is_not_a_loss(
    redis: str, tmp_path: Path, warnings: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log then holds a batch Redis never merged, but within the offsets announced before
    the append: the next writer rebuilds nothing, and the replayed batch applies once."""
    events, batches = random_batches(4, [100, 100])

    class Killed(Exception):
        pass

    with namespace(redis, tmp_path) as (online, offline):
        writer = ViewWriter(online, offline, VIEW, 1)
        writer.load_positions()
        writer.apply(batches[0], batches[0].last_offsets())
        stood = dict(writer.positions)

        def killed(*_args: Any) -> None:
            raise Killed

        monkeypatch.setattr(online, "merge_shards", killed)
        with pytest.raises(Killed):
            writer.apply(batches[1], batches[1].last_offsets())
        monkeypatch.undo()
        # The log holds both batches' applied events; Redis the first batch only.
        applied, _late = apply_lateness(events, VIEW.lateness_us)
        assert offline.read_events(VIEW.name, 1).num_rows == len(applied)

        # Pseudo-partition rows (an import to the log only) never count either.
        table = event_table(
            {"user_id": pa.array(["a|b"]), "card": pa.array(["c"]), "amount": pa.array([1.0])},
            np.array([events[0].ts]),
            np.array([-1]),
            np.array([0]),
        )
        offline.append(VIEW.name, 1, table)

        restarted = ViewWriter(online, offline, VIEW, 1)
        assert restarted.load_positions() == stood
        assert restarted.rebuilds == 0 and "Redis lost" not in warnings.text
        restarted.apply(batches[1], batches[1].last_offsets())
        assert_reference(online, events)


def test_reads_during_a_rebuild_say_rebuilding_and_an_unfinished_one_is_done_again(
    redis: str, tmp_path: Path, warnings: pytest.LogCaptureFixture
) -> None:
    events, batches = random_batches(5, [150, 150])
    seen: list[set[str]] = []

    with namespace(redis, tmp_path) as (online, offline):

        class Watched(OfflineStore):
            """The log, read by the rebuild: what would a read see at that moment?"""

            def scan_events(
                self, view: str, version: int, batch_rows: int = SCAN_ROWS
            ) -> Iterator[pa.Table]:
                [got] = read_features(online, [(VIEW.name, 1, LAYOUT, KEYS)], events[-1].ts)
                seen.append({value.status for entity in got for value in entity.values()})
                yield from super().scan_events(view, version, batch_rows)

        watched = Watched(offline.config)
        writer = ViewWriter(online, watched, VIEW, 1)
        writer.load_positions()
        apply_all(writer, batches)
        wipe(online)
        ViewWriter(online, watched, VIEW, 1).load_positions()
        assert seen == [{"rebuilding"}]
        assert_reference(online, events)  # and not `rebuilding` any more

        # A rebuild that died half way leaves its marker: the next writer to load rebuilds.
        online.set_rebuilding(VIEW.name, 1, "a test")
        again = ViewWriter(online, offline, VIEW, 1)
        again.load_positions()
        assert again.rebuilds == 1
        assert "did not finish (a test)" in warnings.text
        assert online.state(VIEW.name, 1).rebuilding is None
        assert_reference(online, events)
