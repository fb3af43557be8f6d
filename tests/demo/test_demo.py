"""`fstore demo --quick` end to end, as a user (and CI) runs it: installed from the wheel into a
fresh virtualenv, run from an empty folder (no checkout near it) against the session's real
Kafka and Redis, asserting its exit code and the summary it prints."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as redis_lib
from confluent_kafka.admin import AdminClient

from featurestore.config import KafkaSettings
from tests.demo.conftest import user_env

pytestmark = pytest.mark.integration

FSTORE = str(Path(sys.executable).parent / "fstore")


def _demo(
    kafka: KafkaSettings, redis: str, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The checkout's `fstore demo` (the failure paths need no wheel)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSTORE_")}
    env |= {
        "FSTORE_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "FSTORE_REDIS_URL": redis,
        "COLUMNS": "200",  # one summary row per line
    }
    return subprocess.run(
        [FSTORE, "demo", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_quick_demo_runs_every_step_and_says_so(
    installed_wheel: Path, kafka: KafkaSettings, redis: str, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = user_env(
        FSTORE_KAFKA_BOOTSTRAP=kafka.bootstrap,
        FSTORE_REDIS_URL=redis,
        COLUMNS="200",  # one summary row per line
    )
    began = time.monotonic()
    done = subprocess.run(
        [str(installed_wheel / "fstore"), "demo", "--quick"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    print(f"fstore demo --quick (from the wheel) took {time.monotonic() - began:.1f}s")
    folder = empty / "demo-data"
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-4000:]
    for number in range(1, 9):
        assert f"{number}/8 " in out
    assert "Demo complete." in out

    auc = float(re.search(r"holdout AUC (\d\.\d+)", out).group(1))  # type: ignore[union-attr]
    assert auc > 0.75
    # Both models' holdout AUCs, without and with the request-time feature, on the same rows.
    compared = re.search(
        r"holdout AUC without the added features (\d\.\d+) \(fraud@\d+\), with them "
        r"(\d\.\d+) \(fraud_realtime@\d+: \+ amount_p90_24h, amount_vs_user_mean_24h\): "
        r"([+-]\d\.\d+)",
        out,
    )
    assert compared is not None, out[-4000:]
    without, with_added, gain = (float(compared.group(i)) for i in (1, 2, 3))
    assert without == auc and with_added > 0.75
    assert abs(with_added - without - gain) < 0.0015  # printed rounded to 3 places
    assert re.search(r"user_txn: 0 mismatches in [\d,]+ values", out)
    assert re.search(r"merchant_txn: 0 mismatches in [\d,]+ values", out)
    assert re.search(r"amounts x3 from [\d:]+: ALERT on \d+ amount features", out)
    assert re.search(r"[\d,]+ req/s, latency p50 [\d.]+ ms, p99 [\d.]+ ms", out)
    assert "API docs http://127.0.0.1:" in out

    summary = json.loads((folder / "summary.json").read_text())
    assert summary["metrics"]["auc"] > 0.75
    compared_json = summary["with_without"]
    assert compared_json["added"] == [
        "user_txn:amount_p90_24h",
        "amount_vs_user_mean:amount_vs_user_mean_24h",
    ]
    assert compared_json["without"]["auc"] == summary["metrics"]["auc"]
    assert 0.75 < compared_json["with"]["auc"] <= 1.0
    assert summary["ingested"] == summary["events"] > 0
    assert summary["scoring"]["requests"] == 1000 and summary["scoring"]["errors"] == 0
    assert {check["view"] for check in summary["verify"]} == {"user_txn", "merchant_txn"}
    assert all(check["mismatches"] == 0 for check in summary["verify"])
    alerts = summary["drift"]["alerts"]
    assert any(a.startswith("feature:user_txn__amount_") for a in alerts), alerts
    # The monitor's own records: the shifted window alerts on the amounts it multiplied.
    drift = json.loads((folder / "drift.json").read_text())
    shifted = [e for e in drift["alerts"] if e["event"] == "alert"]
    assert any(e["column"] == "user_txn__amount_last_24h" for e in shifted)

    # Nothing of the run is left on the shared broker and server.
    config = (folder / "featurestore.yaml").read_text()
    namespace = re.search(r"namespace: (\S+)", config).group(1)  # type: ignore[union-attr]
    prefix = namespace.replace("fstore-demo-", "fstore-demo.") + "."
    topics = AdminClient({"bootstrap.servers": kafka.bootstrap}).list_topics(timeout=10).topics
    assert not [t for t in topics if t.startswith(prefix)]
    assert not list(redis_lib.Redis.from_url(redis).scan_iter(match=f"{namespace}:*"))


def test_a_folder_the_demo_did_not_make_is_refused(
    kafka: KafkaSettings, redis: str, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    done = _demo(kafka, redis, "--quick", "--data-dir", str(tmp_path), timeout=120)
    assert done.returncode == 1
    assert "step 2 failed" in done.stdout
    assert "never touches your data" in done.stdout
    assert "What to do: pass an empty or new folder with --data-dir" in done.stdout
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_model_below_the_auc_bar_fails_the_demo(
    kafka: KafkaSettings, redis: str, tmp_path: Path
) -> None:
    done = _demo(kafka, redis, "--quick", "--min-auc", "0.9999", "--data-dir", str(tmp_path / "d"))
    assert done.returncode == 1, done.stdout[-3000:]
    assert "step 5 failed" in done.stdout
    assert re.search(r"holdout AUC \d\.\d+ is not above 0.9999", done.stdout)
    assert "What to do: give it more data" in done.stdout
    assert "6/8" not in done.stdout  # nothing ran after the failed step
