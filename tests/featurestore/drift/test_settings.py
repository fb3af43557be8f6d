"""The `monitor` section of the settings: file, environment, overrides, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from featurestore.config import load_settings
from featurestore.errors import ConfigError


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FSTORE_CONFIG", raising=False)
    return tmp_path


def test_defaults_follow_the_conventions(in_tmp: Path) -> None:
    monitor = load_settings().monitor
    assert (monitor.drift_topic, monitor.alerts_topic, monitor.labels_topic) == (
        "fstore.drift",
        "fstore.alerts",
        "fstore.labels",
    )
    assert monitor.window_us == 300_000_000 and monitor.sliding_windows == 12  # 5m, 1h
    assert (monitor.thresholds.psi_warn, monitor.thresholds.psi_alert) == (0.1, 0.25)
    assert monitor.thresholds.js_alert == 0.1 and monitor.thresholds.ks_alert is None
    assert monitor.min_samples == 200


def test_file_and_environment(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (in_tmp / "featurestore.yaml").write_text(
        "monitor:\n"
        "  window: 1m\n"
        "  allowed_lateness: 0s\n"
        "  feature_thresholds: {user_txn__amount_sum_1h: {psi_alert: 0.5}}\n"
        "  score_thresholds: {js_alert: null}\n"
        "  command: [./retrain.sh, --model, fraud]\n"
        "  watch: {user_txn: {columns: [amount], model: fraud@3, features: {amount: x}}}\n"
    )
    monkeypatch.setenv("FSTORE_MONITOR_WEBHOOK_URL", "https://hooks.example.com/drift")
    monitor = load_settings().monitor
    assert monitor.window_us == 60_000_000 and monitor.lateness_us == 0
    amount = monitor.thresholds_for("user_txn__amount_sum_1h")
    assert (amount.psi_warn, amount.psi_alert, amount.js_alert) == (0.1, 0.5, 0.1)
    assert monitor.thresholds_for(None).js_alert is None  # the score's override
    assert monitor.thresholds_for("other") == monitor.thresholds
    assert monitor.command == ["./retrain.sh", "--model", "fraud"]
    assert monitor.webhook_url == "https://hooks.example.com/drift"
    assert monitor.watch["user_txn"].features == {"amount": "x"}


@pytest.mark.parametrize(
    ("yaml", "problem"),
    [
        ("monitor: {window: 5 minutes}", "is not a duration like '30s'"),
        ("monitor: {webhook_url: 'ftp://x'}", "must be an http:// or https:// URL"),
        ("monitor: {thresholds: {psi_alert: -1}}", "psi_alert"),
        ("monitor: {min_samples: 0}", "min_samples"),
    ],
)
def test_bad_values_say_what_is_wrong(in_tmp: Path, yaml: str, problem: str) -> None:
    (in_tmp / "featurestore.yaml").write_text(yaml)
    with pytest.raises(ConfigError, match=problem):
        load_settings()
