"""Redis error replies on a real server of the test's own, put in each state for real: the
replies that say "not now" (READONLY, OOM, BUSY, MASTERDOWN, LOADING) become a
`RedisUnavailable` naming the reply and the server without its password; a writer waits them out
and succeeds once the state clears; any other error reply (WRONGTYPE) fails at once. And the
eviction-policy check refuses a server that may evict our keys, at the start of the commands
that write them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import redis as redis_lib

from featurestore.config import OfflineSettings, RedisSettings
from featurestore.definitions import Aggregation, Entity, FeatureView, KafkaSource
from featurestore.errors import ConfigError, OnlineStoreError, RedisUnavailable
from featurestore.events import EventBatch
from featurestore.offline.log import OfflineStore
from featurestore.online import OnlineStore, read_features
from featurestore.redis_client import check_eviction_policy, redis_errors
from featurestore.retry import retry_online
from featurestore.services import free_port
from featurestore.tiles import TileLayout
from featurestore.writer import ViewWriter
from tests.redis_faults import OwnRedis, own_redis

pytestmark = pytest.mark.integration

US = 1_000_000
VIEW = FeatureView(
    name="txn",
    entities=[Entity(name="user", join_keys=["user_id"])],
    source=KafkaSource(
        name="txns",
        topic="unused",
        timestamp_field="ts",
        schema={"user_id": "string", "amount": "float64"},
    ),
    tile="1m",
    aggregations=[
        Aggregation(function="count", windows=["1h"]),
        Aggregation(column="amount", function="sum", windows=["1h"]),
    ],
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OwnRedis]:
    with own_redis(tmp_path / "redis", "--busy-reply-threshold", "100") as own:
        yield own


def batch(first_offset: int, count: int, now_us: int) -> EventBatch:
    users = [f"u{i % 3}" for i in range(count)]
    return EventBatch(
        {"user_id": users, "amount": [1.0] * count},
        np.full(count, now_us - 60 * US, dtype=np.int64),
        np.zeros(count, dtype=np.int64),
        np.arange(first_offset, first_offset + count, dtype=np.int64),
    )


def writer(server: OwnRedis, root: Path) -> ViewWriter:
    store = OnlineStore(RedisSettings(url=server.url, namespace="t"))
    return ViewWriter(store, OfflineStore(OfflineSettings(root=root)), VIEW, 1)


def counts(store: OnlineStore, now_us: int) -> dict[str, float | None]:
    layout = TileLayout(VIEW)
    [values] = read_features(store, [("txn", 1, layout, ["u0", "u1", "u2"])], now_us)
    return {
        user: row["count_1h"].value for user, row in zip(["u0", "u1", "u2"], values, strict=True)
    }


def clear_later(seconds: float, clear: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        time.sleep(seconds)
        clear()

    thread = threading.Thread(target=run, name="clear-fault")
    thread.start()
    return thread


@pytest.mark.parametrize("fault", ["READONLY", "OOM"])
def test_a_writer_waits_out_a_refusing_redis_and_then_applies_its_batch(
    server: OwnRedis, tmp_path: Path, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    now_us = time.time_ns() // 1000
    apply = writer(server, tmp_path / "offline")
    apply.load_positions()
    assert apply.apply(batch(0, 30, now_us), {0: 29}).applied == 30

    control = server.client()
    clear: Callable[[], object]
    if fault == "READONLY":
        server.replica_of_nothing()
        clear = server.master_again
    else:
        control.config_set("maxmemory", "1")  # noeviction: every write is refused
        clear = partial(control.config_set, "maxmemory", "0")
    # The state is real: the server itself refuses the merge with that reply.
    with pytest.raises(RedisUnavailable) as refused:
        apply.online.merge_batch(
            "txn", 1, apply.layout, [], [], np.zeros((0, 3)), {0: (apply.positions[0],) * 2}
        )
    assert refused.value.reply == fault
    assert f"Redis at {server.url} answered {fault}" in str(refused.value)

    caplog.set_level(logging.WARNING, logger="fstore.retry")
    clearing = clear_later(1.0, clear)
    started = time.monotonic()
    assert apply.apply(batch(30, 30, now_us), {0: 59}).applied == 30
    clearing.join()
    assert time.monotonic() - started >= 0.9  # it waited for the state to clear
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert retries and all(f"answered {fault}" in text for text in retries), retries
    assert counts(apply.online, now_us) == {"u0": 20.0, "u1": 20.0, "u2": 20.0}
    control.close()
    apply.online.close()


def test_busy_and_masterdown_replies_are_unavailable_on_reads(server: OwnRedis) -> None:
    store = OnlineStore(RedisSettings(url=server.url, namespace="t"))
    now_us = time.time_ns() // 1000
    with server.busy():
        for call in (lambda: store.positions("txn", 1), lambda: counts(store, now_us)):
            with pytest.raises(RedisUnavailable, match=r"answered BUSY: Redis is busy") as caught:
                call()
            assert caught.value.reply == "BUSY"
    server.replica_of_nothing(serve_stale=False)
    with pytest.raises(RedisUnavailable, match="answered MASTERDOWN") as caught:
        store.positions("txn", 1)
    assert caught.value.reply == "MASTERDOWN"
    with pytest.raises(RedisUnavailable, match="answered MASTERDOWN"):
        counts(store, now_us)
    server.master_again()
    assert store.positions("txn", 1) == {}
    store.close()


def test_loading_is_unavailable_until_the_data_set_is_loaded(server: OwnRedis) -> None:
    store = OnlineStore(RedisSettings(url=server.url, namespace="t"))
    server.restart_loading(keys=20_000, delay_us=200)  # about 4 s of LOADING
    with pytest.raises(RedisUnavailable, match="answered LOADING") as caught:
        store.positions("txn", 1)
    assert caught.value.reply == "LOADING"
    # A worker's call is retried until the data set is in.
    assert retry_online(lambda: store.positions("txn", 1)) == {}
    server.client().ping()
    store.close()


def test_other_error_replies_are_bugs_raised_at_once(server: OwnRedis) -> None:
    client = server.client()
    client.set("a-string", "x")
    attempts = 0

    def wrong_type() -> object:
        nonlocal attempts
        attempts += 1
        with redis_errors(RedisSettings(url=server.url)):
            return client.hgetall("a-string")

    with pytest.raises(redis_lib.ResponseError, match="WRONGTYPE") as caught:
        retry_online(wrong_type)
    assert not isinstance(caught.value, OnlineStoreError)
    assert attempts == 1
    client.close()


def test_a_reply_built_from_a_raw_answer_is_classified_by_its_first_word() -> None:
    """The asyncio read path raises error answers as `redis.ResponseError(text)`."""
    settings = RedisSettings(url="redis://:pw@cache:6379/0")
    with pytest.raises(RedisUnavailable) as caught:
        with redis_errors(settings):
            raise redis_lib.ResponseError("MASTERDOWN Link with MASTER is down")
    assert str(caught.value) == (
        "Redis at redis://:***@cache:6379/0 answered MASTERDOWN: Link with MASTER is down"
    )
    for passing in ("NOSCRIPT No matching script", "ERR syntax error", "no code at all"):
        with pytest.raises(redis_lib.ResponseError, match=passing):
            with redis_errors(settings):
                raise redis_lib.ResponseError(passing)


# --- maxmemory-policy ---------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
def test_an_evicting_policy_is_refused_unless_accepted(
    tmp_path: Path, policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    with own_redis(tmp_path, "--maxmemory-policy", policy, "--maxmemory", "100mb") as own:
        settings = RedisSettings(url=own.url)
        with pytest.raises(ConfigError) as refused:
            check_eviction_policy(settings)
        text = str(refused.value)
        assert f"Redis at {own.url} has maxmemory-policy {policy}" in text
        assert "silently loses part of a window's history" in text
        assert "maxmemory-policy noeviction" in text and "redis.allow_eviction" in text
        caplog.set_level(logging.WARNING, logger="fstore.redis")
        accepted = settings.model_copy(update={"allow_eviction": True})
        assert check_eviction_policy(accepted) == policy
        assert any("accepted by redis.allow_eviction" in r.getMessage() for r in caplog.records)


def test_noeviction_passes_and_an_unreadable_policy_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fstore.redis")
    with own_redis(tmp_path / "a") as own:
        assert check_eviction_policy(RedisSettings(url=own.url)) == "noeviction"
    assert not caplog.records
    # CONFIG renamed away, as managed Redis services do: the process goes on, and says so.
    with own_redis(tmp_path / "b", "--rename-command", "CONFIG", "") as own:
        assert check_eviction_policy(RedisSettings(url=own.url)) is None
    assert "refused CONFIG GET maxmemory-policy" in caplog.text
    caplog.clear()
    down = RedisSettings(url=f"redis://:pw@127.0.0.1:{free_port()}/0")
    assert check_eviction_policy(down) is None
    assert "could not check that it evicts no keys" in caplog.text
    assert ":pw@" not in caplog.text


@pytest.mark.parametrize("command", ["ingest", "monitor"])
def test_the_worker_commands_refuse_an_evicting_redis_at_start(
    tmp_path: Path, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streaming import cli

    with own_redis(tmp_path / "redis", "--maxmemory-policy", "volatile-lru") as own:
        monkeypatch.setenv("FSTORE_REDIS_URL", own.url)
        monkeypatch.setenv("FSTORE_REGISTRY_PATH", str(tmp_path / "registry"))
        monkeypatch.setenv("FSTORE_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
        monkeypatch.delenv("FSTORE_REDIS_ALLOW_EVICTION", raising=False)
        with pytest.raises(ConfigError, match="has maxmemory-policy volatile-lru"):
            getattr(cli, command)()
