"""`fstore serve --workers 2`: two real worker processes behind one port share the registries
(SQLite files, or a PostgreSQL server) and Redis, and `/metrics` and the dashboard report the
host, whichever worker answers."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import yaml
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from featurestore.config import ModelsSettings, RegistrySettings, Settings
from featurestore.models import ModelRegistry
from featurestore.registry import Registry
from featurestore.repo import load_repo
from serving.metrics import MULTIPROCESS_ENV, prepare_multiprocess_dir
from tests.serve_process import fstore_serve_process
from tests.serving.conftest import USERS, World

pytestmark = pytest.mark.integration

PREDICT = "/v1/predict/{model}"


def served_rows_by_worker(folder: Path) -> dict[int, float]:
    """Rows each worker process scored, read from its own file in the shared folder."""
    rows: dict[int, float] = {}
    for path in folder.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            _metric, sample, labels, _help = json.loads(key)
            if sample == "fstore_predictions_total" and labels.get("role") == "served":
                rows[pid] = rows.get(pid, 0.0) + value
    return rows


def scrape(url: str) -> dict[str, float]:
    """The host's served rows and predict requests, as one scrape of /metrics reports them."""
    text = httpx.get(f"{url}/metrics").text
    found = {"rows": 0.0, "requests": 0.0}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "fstore_predictions_total" and s.labels.get("role") == "served":
                found["rows"] += s.value
            if s.name == "fstore_http_request_seconds_count" and s.labels["route"] == PREDICT:
                found["requests"] += s.value
    return found


def on_postgres(settings: Settings, world: World, url: str, folder: Path) -> Settings:
    """The settings with both registries in the PostgreSQL database at `url`: the world's repo
    applied and its model versions registered again (same numbers, same artifacts' text)."""
    Registry(RegistrySettings(url=url)).apply(load_repo(world.root / "repo"))
    source = ModelRegistry(settings.models)
    models = ModelsSettings(path=folder, url=url)
    target = ModelRegistry(models)
    for v in source.versions("fraud"):
        target.register(
            "fraud",
            source.load_text(v),
            objective=v.objective,
            signature=v.signature,
            label=v.label,
            dataset=v.dataset,
            views=v.views,
            params=v.params,
            metrics=v.metrics,
            primary_metric=v.primary_metric,
            profile=v.profile,
            who="tests",
            libraries=v.libraries,
        )
    target.set_alias("fraud", "production", source.get("fraud").version, who="tests")
    return settings.model_copy(
        update={"registry": RegistrySettings(path=folder, url=url), "models": models}
    )


@pytest.fixture
def two_workers(
    serving_settings: Settings, world: World, registry_url: str | None, tmp_path: Path
) -> Iterator[tuple[str, Path, Settings]]:
    """`fstore serve --workers 2` on the registries in SQLite files, then in PostgreSQL."""
    settings = serving_settings
    if registry_url is not None:
        settings = on_postgres(settings, world, registry_url, tmp_path / "pg-models")
    config = tmp_path / "featurestore.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap": settings.kafka.bootstrap},
                "redis": settings.redis.model_dump(),
                "offline": {"root": str(settings.offline.root)},
                "registry": {"path": str(settings.registry.path), "url": settings.registry.url},
                "models": {"path": str(settings.models.path), "url": settings.models.url},
                # A generous Redis deadline: this test is about workers, not load shedding
                # on a busy machine.
                "serving": {
                    "prediction_log_topic": "",
                    "reload_interval_s": 0.2,
                    "redis_deadline_ms": 10_000,
                },
            }
        )
    )
    # A folder of our own, to read each worker's values; a stale file of an earlier run in it
    # must be gone before the workers start (it would count again, or break the collector).
    shared = tmp_path / "metrics"
    shared.mkdir()
    (shared / "counter_1.db").write_bytes(b"left over from an earlier run")
    env = {**os.environ, MULTIPROCESS_ENV: str(shared)}
    log = tmp_path / "serve.log"
    with fstore_serve_process(config, log, "--workers", "2", env=env) as url:
        yield url, shared, settings


def test_two_workers_share_the_registry_and_report_the_host(
    two_workers: tuple[str, Path, Settings],
) -> None:
    url, shared, settings = two_workers
    assert not (shared / "counter_1.db").exists()
    body = {"entities": {"user_id": USERS[:5]}}
    requests = 0
    # Each request on a connection of its own: the kernel hands connections to either worker.
    # Until both have scored (bounded: a hang fails, a slow machine only takes longer).
    deadline = time.monotonic() + 120
    while len(served_rows_by_worker(shared)) < 2:
        assert time.monotonic() < deadline, f"one worker took every connection: {requests}"
        for _ in range(10):
            response = httpx.post(f"{url}/v1/predict/fraud", json=body)
            assert response.status_code == 200, response.text
            assert set(response.json()["versions"]) == {1}
            requests += 1

    # A worker counts a request once its answer is sent: wait for the last ones to land.
    deadline = time.monotonic() + 30
    while sum(served_rows_by_worker(shared).values()) != 5 * requests:
        assert time.monotonic() < deadline, served_rows_by_worker(shared)
        time.sleep(0.05)
    per_worker = served_rows_by_worker(shared)
    assert len(per_worker) == 2 and all(rows > 0 for rows in per_worker.values())
    # Whichever worker answers a scrape, it reports the host: both workers' rows together.
    for _ in range(8):
        assert scrape(url) == {"rows": 5.0 * requests, "requests": float(requests)}
        overview = httpx.get(f"{url}/ui/api/overview").json()
        assert overview["traffic"]["totals"]["requests"] == requests
        (fraud,) = [m for m in overview["models"]["data"] if m["name"] == "fraud"]
        (first,) = [v for v in fraud["versions"] if v["version"] == 1]
        assert first["rows_scored"] == 5 * requests

    # Another process moves production; both workers follow it through the shared registry.
    ModelRegistry(settings.models).set_alias(
        "fraud", "production", 2, who="tests", force=True, reason="two workers"
    )
    deadline, streak = time.monotonic() + 60, 0
    while streak < 20:  # 20 fresh connections in a row on version 2: both workers moved
        assert time.monotonic() < deadline, "the workers did not both follow the alias"
        response = httpx.post(f"{url}/v1/predict/fraud", json=body)
        assert response.status_code == 200, response.text
        streak = streak + 1 if set(response.json()["versions"]) == {2} else 0


def test_the_shared_folder_is_emptied_or_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = tmp_path / "given"
    given.mkdir()
    (given / "histogram_123.db").write_bytes(b"stale")
    (given / "keep.txt").write_text("not ours")
    monkeypatch.setenv(MULTIPROCESS_ENV, str(given))
    assert prepare_multiprocess_dir() == (given, False)
    assert sorted(p.name for p in given.iterdir()) == ["keep.txt"]

    monkeypatch.delenv(MULTIPROCESS_ENV)
    made, made_here = prepare_multiprocess_dir()
    assert made_here and made.is_dir() and os.environ[MULTIPROCESS_ENV] == str(made)
    made.rmdir()


# A worker's death is the same on either registry backend: SQLite only.
@pytest.mark.parametrize("registry_url", [None])
def test_a_killed_worker_leaves_its_counts_and_drops_its_gauges(
    two_workers: tuple[str, Path, Settings],
) -> None:
    """kill -9 of a worker: uvicorn starts another; what the dead one served still counts, and
    its live gauges (requests in flight, models loaded) leave the host's figures."""
    url, shared, _settings = two_workers
    body = {"entities": {"user_id": USERS[:5]}}
    requests, deadline = 0, time.monotonic() + 120
    while len(served_rows_by_worker(shared)) < 2:
        assert time.monotonic() < deadline, f"one worker took every connection: {requests}"
        assert httpx.post(f"{url}/v1/predict/fraud", json=body).status_code == 200
        requests += 1
    while sum(served_rows_by_worker(shared).values()) != 5 * requests:
        assert time.monotonic() < deadline, served_rows_by_worker(shared)
        time.sleep(0.05)
    victim = min(served_rows_by_worker(shared))
    assert (shared / f"gauge_livemax_{victim}.db").exists()

    os.kill(victim, signal.SIGKILL)
    # Every scrape after the kill reports the host as before: the dead worker's rows included,
    # its live gauge file gone; the replacement worker answers too.
    for _ in range(10):
        assert scrape(url)["rows"] == 5.0 * requests
        assert not (shared / f"gauge_livemax_{victim}.db").exists()
    answered = httpx.post(f"{url}/v1/predict/fraud", json=body)
    assert answered.status_code == 200, answered.text
