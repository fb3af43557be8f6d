"""`fstore train` and `fstore models ...` through typer's runner, on real files."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from typer.testing import CliRunner

from featurestore import FeatureStore, RegistryError, cli
from featurestore.errors import ConfigError
from featurestore.models import PRODUCTION, PromotionRefused
from featurestore.models.promotion import default_who


@pytest.fixture
def runner(store: FeatureStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """Settings from FSTORE_* pointing at the `store` fixture's folders, and a dataset; the
    model commands registered as `fstore` registers them (the fstore.commands entry point)."""
    if "models" not in {e.name for e in entry_points(group="fstore.commands")}:
        pytest.fail("the installed fstore predates pyproject.toml: pip install -e '.[dev]'")
    cli._load_plugins()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FSTORE_CONFIG", raising=False)
    monkeypatch.setenv("FSTORE_OFFLINE_ROOT", str(store.settings.offline.root))
    monkeypatch.setenv("FSTORE_REGISTRY_PATH", str(store.settings.registry.path))
    monkeypatch.setenv("FSTORE_MODELS_PATH", str(store.settings.models.path))
    monkeypatch.setenv("COLUMNS", "250")
    store.create_dataset("train", tmp_path / "labels.parquet", service="fraud")
    return CliRunner()


def test_train_promote_traffic_rollback_history(
    runner: CliRunner, store: FeatureStore, tmp_path: Path
) -> None:
    (tmp_path / "params.yaml").write_text("learning_rate: 0.1\nnum_leaves: 7\n")
    trained = runner.invoke(
        cli.app,
        ["train", "--dataset", "train@1", "--model", "fraud", "--label", "is_fraud"]
        + ["--params", "params.yaml"],
    )
    assert trained.exit_code == 0, trained.output
    assert "Registered fraud@1 (binary, 640 training / 160 validation rows" in trained.output
    version = store.models.get("fraud", 1)
    assert f"auc {version.metrics['auc']:.4f}" in trained.output
    assert (version.params["learning_rate"], version.params["num_leaves"]) == (0.1, 7)
    assert version.created_by == default_who()  # the login name: no flag claims another
    # Leaves of 10,000 rows: no split fits, every score is the same, the AUC is 0.5.
    (tmp_path / "flat.json").write_text(json.dumps({"min_data_in_leaf": 10_000}))
    flat = runner.invoke(
        cli.app,
        ["train", "--dataset", "train", "--model", "fraud", "--label", "is_fraud"]
        + ["--params", "flat.json", "--objective", "binary", "--validation-fraction", "0.25"],
    )
    assert flat.exit_code == 0, flat.output
    assert "600 training / 200 validation rows" in flat.output

    promoted = runner.invoke(cli.app, ["models", "promote", "fraud", "1"])
    assert promoted.exit_code == 0, promoted.output
    assert "fraud: production - -> v1" in promoted.output

    assert store.models.get("fraud", 2).metrics["auc"] == 0.5
    refused = runner.invoke(cli.app, ["models", "promote", "fraud", "2"])
    assert refused.exit_code == 1
    assert isinstance(refused.exception, PromotionRefused)
    no_reason = runner.invoke(cli.app, ["models", "promote", "fraud", "2", "--force"])
    assert isinstance(no_reason.exception, RegistryError)
    assert "needs a reason" in str(no_reason.exception)
    forced = runner.invoke(
        cli.app, ["models", "promote", "fraud", "2", "--force", "--reason", "drill"]
    )
    assert forced.exit_code == 0, forced.output
    assert "v1 -> v2 (forced past the gate)" in forced.output

    rolled = runner.invoke(cli.app, ["models", "rollback", "fraud", "--reason", "drill over"])
    assert rolled.exit_code == 0, rolled.output
    assert store.models.get("fraud").version == 1

    aliased = runner.invoke(cli.app, ["models", "alias", "fraud", "canary", "2"])
    assert aliased.exit_code == 0, aliased.output
    split = runner.invoke(cli.app, ["models", "traffic", "fraud", "production=90", "canary=10"])
    assert split.exit_code == 0, split.output
    assert "production -> v1 90.0%" in split.output and "canary -> v2 10.0%" in split.output
    assert store.models.rollout("fraud").traffic == pytest.approx(
        {"production": 0.9, "canary": 0.1}
    )
    bad = runner.invoke(cli.app, ["models", "traffic", "fraud", "production:90"])
    assert bad.exit_code == 1 and "not ALIAS=NUMBER" in str(bad.exception)

    history = runner.invoke(cli.app, ["models", "history", "fraud"])
    assert history.exit_code == 0, history.output
    lines = [line for line in history.output.splitlines() if " fraud " in line]
    # Cells between the table's "│" borders: id, at, model, action, ...
    assert [[cell.strip() for cell in line.split("│")][4] for line in lines] == [
        "register",
        "register",
        "alias",
        "alias (forced)",
        "rollback",
        "alias",
        "traffic",
    ]
    assert "drill over" in history.output

    listing = runner.invoke(cli.app, ["models", "list"])
    assert listing.exit_code == 0, listing.output
    assert "fraud" in listing.output and "1, 2" in listing.output
    assert "production -> 1" in listing.output and "production 90%" in listing.output


def test_show_prints_the_lineage(runner: CliRunner, store: FeatureStore) -> None:
    version = store.train_model("train", "fraud", "is_fraud", who="alice")
    store.models.set_alias("fraud", PRODUCTION, 1, who="alice")

    for ref in ("fraud", "fraud@1", "fraud@production"):
        shown = runner.invoke(cli.app, ["models", "show", ref])
        assert shown.exit_code == 0, shown.output
        assert "fraud@1" in shown.output and "aliases: production" in shown.output
        assert f"dataset: train@1 (content hash {version.dataset.content_hash})" in shown.output
        assert "views: user_txn@1" in shown.output
        assert "user_txn@1:amount_last_1h" in shown.output
        assert version.artifact_sha256 in shown.output
        assert '"best_iteration"' in shown.output
    missing = runner.invoke(cli.app, ["models", "show", "fraud@7"])
    assert missing.exit_code == 1
    assert "model 'fraud' has versions 1; aliases: production -> 1" in str(missing.exception)


def test_errors_name_the_problem(runner: CliRunner, tmp_path: Path) -> None:
    empty = runner.invoke(cli.app, ["models", "list"])
    assert empty.exit_code == 0 and "No models" in empty.output

    (tmp_path / "bad.yaml").write_text("- not a mapping\n")
    result = runner.invoke(
        cli.app,
        ["train", "--dataset", "train", "--model", "m", "--label", "is_fraud"]
        + ["--params", "bad.yaml"],
    )
    assert result.exit_code == 1
    assert isinstance(result.exception, ConfigError)
    assert "must hold a mapping" in str(result.exception)
    unknown = runner.invoke(cli.app, ["models", "rollback", "nope"])
    assert isinstance(unknown.exception, RegistryError)
    assert "unknown model 'nope'" in str(unknown.exception)
