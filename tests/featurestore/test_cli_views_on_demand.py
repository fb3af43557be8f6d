"""`fstore views` lists request-time features beside the views: version, fingerprint, inputs
(request fields with their types, pinned view features) and typed outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from featurestore import cli
from featurestore.config import RegistrySettings
from featurestore.registry import Registry

REPO = """
import numpy as np
from featurestore import Aggregation, Entity, FeatureView, KafkaSource
from featurestore.on_demand import RequestSource, on_demand_feature

user = Entity(name="user", join_keys=["user_id"])
txns = KafkaSource(name="txns", topic="t", timestamp_field="ts",
                   schema={"user_id": "string", "amount": "float64"})
user_txn = FeatureView(name="user_txn", entities=[user], source=txns, tile="1m",
    aggregations=[Aggregation(column="amount", function="mean", windows=["24h"])])
txn = RequestSource(name="txn", schema={"amount": "float64", "channel": "string"})

@on_demand_feature(request=[txn], features=["user_txn:amount_mean_24h"],
                   outputs={"amount_vs_mean": "float64", "is_web": "bool"})
def txn_signals(inputs):
    mean = inputs["amount_mean_24h"]
    return {"amount_vs_mean": inputs["amount"] / np.where(mean > 0, mean, np.nan) * FACTOR,
            "is_web": inputs["channel"] == "web"}
"""


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FSTORE_CONFIG", raising=False)
    monkeypatch.setenv("FSTORE_REGISTRY_PATH", str(tmp_path / "registry"))
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path / "registry"


def _apply(repo: Path, factor: str) -> None:
    repo.mkdir(exist_ok=True)
    (repo / "features.py").write_text(REPO.replace("FACTOR", factor))
    done = CliRunner().invoke(cli.app, ["apply", str(repo)])
    assert done.exit_code == 0, done.output


def test_views_lists_request_time_features_with_inputs_and_output_types(
    registry: Path, tmp_path: Path
) -> None:
    _apply(tmp_path / "repo", "1.0")
    _apply(tmp_path / "repo", "2.0")  # a changed function: version 2
    listing = CliRunner().invoke(cli.app, ["views"])
    assert listing.exit_code == 0, listing.output
    out = listing.output
    assert "user_txn" in out and "amount_mean_24h" in out  # the view, as before
    latest = Registry(RegistrySettings(path=registry)).get_on_demand("txn_signals")
    assert latest.version == 2
    row = next(line for line in out.splitlines() if "txn_signals" in line)
    assert "v2" in row and latest.fingerprint in row
    for part in (
        "request-time feature",
        "txn.amount: float64",
        "txn.channel: string",
        "user_txn@1:amount_mean_24h",
        "amount_vs_mean: float64",
        "is_web: bool",
    ):
        assert part in out, part
    every = CliRunner().invoke(cli.app, ["views", "--all"]).output
    rows = [line for line in every.splitlines() if "txn_signals" in line]
    assert len(rows) == 2 and "v1" in rows[0] and "v2" in rows[1]


def test_views_without_request_time_features_shows_no_such_table(
    registry: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "features.py").write_text(REPO.split("txn = RequestSource")[0])
    assert CliRunner().invoke(cli.app, ["apply", str(repo)]).exit_code == 0
    out = CliRunner().invoke(cli.app, ["views"]).output
    assert "user_txn" in out and "request-time feature" not in out
