"""Definition-time type checks through `fstore apply` on a repo of its own: a request-time
feature's function run on synthetic rows (undeclared inputs, failures on missing values, wrong
outputs, types and lengths), unknown inputs, and an aggregation over a wrong-typed column. Each
fails the apply with a message naming the feature and the fix, and registers nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from featurestore import cli
from featurestore.on_demand_check import check_function, synthetic_inputs
from featurestore.registry import DB_FILE_NAME
from featurestore.repo import load_repo

VIEWS = """
import numpy as np
from featurestore import Aggregation, Entity, FeatureView, KafkaSource
from featurestore.on_demand import RequestSource, on_demand_feature

user = Entity(name="user", join_keys=["user_id"])
txns = KafkaSource(name="txns", topic="t", timestamp_field="ts",
                   schema={"user_id": "string", "merchant": "string", "amount": "float64"})
user_txn = FeatureView(name="user_txn", entities=[user], source=txns, tile="1m",
    aggregations=[Aggregation(function="count", windows=["1h"]),
                  Aggregation(column="amount", function="mean", windows=["1h"])])
txn = RequestSource(name="txn", schema={"amount": "float64", "channel": "string",
                                        "items": "int64", "card_present": "bool"})
"""


def feature(body: str, outputs: str = '{"out": "float64"}', features: str | None = None) -> str:
    refs = features or '["user_txn:amount_mean_1h"]'
    lines = "\n".join(f"    {line}" for line in body.strip().splitlines())
    return (
        f"\n@on_demand_feature(request=[txn], features={refs}, outputs={outputs})\n"
        f"def amount_check(inputs):\n{lines}\n"
    )


GOOD = feature(
    """
mean = inputs["amount_mean_1h"]
return {"out": inputs["amount"] / np.where(mean > 0, mean, np.nan)}
"""
)


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FSTORE_CONFIG", raising=False)
    monkeypatch.setenv("FSTORE_REGISTRY_PATH", str(tmp_path / "registry"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(cli, "_load_plugins", lambda: None)
    return tmp_path / "registry"


def fstore_apply(
    repo_text: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, str]:
    """Run `fstore apply` on a repo of one file: its exit code and its output, on one line."""
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "features.py").write_text(repo_text)
    monkeypatch.setattr(sys, "argv", ["fstore", "apply", str(repo)])
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())


def test_a_correct_function_applies(
    registry: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = fstore_apply(VIEWS + GOOD, tmp_path, monkeypatch, capsys)
    assert code == 0, out
    assert "amount_check" in out and "created" in out


@pytest.mark.parametrize(
    ("definition", "expected"),
    [
        pytest.param(
            feature('return {"out": inputs["amount"] / inputs["amount_mean_24h"]}'),
            [
                "on-demand feature 'amount_check' reads input 'amount_mean_24h', which it does "
                "not declare (its inputs: amount, channel, items, card_present, amount_mean_1h)",
                "add the field to a RequestSource in `request=` or the view feature "
                "`view:amount_mean_24h` to `features=`",
            ],
            id="undeclared-input",
        ),
        pytest.param(
            feature('return {"out": np.array([len(c) for c in inputs["channel"]], float)}'),
            [
                "on-demand feature 'amount_check' failed: TypeError: object of type 'NoneType' "
                "has no len()",
                "at apply time, run on 3 synthetic rows: amount=[1.0, 2.5, nan], "
                "channel=['a', 'b', None]",
                "missing values included (NaN in view features and float64 fields, None in "
                "string fields)",
            ],
            id="fails-on-a-missing-string",
        ),
        pytest.param(
            feature('return {"out": inputs["channel"]}'),
            [
                "on-demand feature 'amount_check', output 'out': returned dtype object; it is "
                "declared float64; return float64 values or declare the type it returns",
            ],
            id="wrong-type",
        ),
        pytest.param(
            feature('return {"out": inputs["amount"] > 1}', outputs='{"out": "int64"}'),
            [],  # a bool column is a valid int64 output (0/1): applies
            id="bool-as-int64-is-fine",
        ),
        pytest.param(
            feature('return {"out": inputs["amount"] * 1.5}', outputs='{"out": "bool"}'),
            ["output 'out': returned dtype float64; it is declared bool"],
            id="float-declared-bool",
        ),
        pytest.param(
            feature('return {"out": inputs["amount"][:1]}'),
            [
                "on-demand feature 'amount_check', output 'out': returned shape (1,) for 3 "
                "rows; return one value per row"
            ],
            id="wrong-length",
        ),
        pytest.param(
            feature('return {"out": np.float64(inputs["amount"].sum())}'),
            ["returned shape () for 3 rows"],
            id="a-scalar",
        ),
        pytest.param(
            feature('return {"ratio": inputs["amount"]}'),
            [
                "on-demand feature 'amount_check' returned outputs ['ratio']; it declares "
                "['out']; return exactly the declared outputs"
            ],
            id="wrong-output-name",
        ),
        pytest.param(
            feature('return {"out": inputs["amount"]}', features='["user_txn:amount_mean_2h"]'),
            [
                "on-demand feature 'amount_check': feature view 'user_txn' has no feature "
                "'amount_mean_2h' (it has: count_1h, amount_mean_1h)"
            ],
            id="unknown-view-feature",
        ),
        pytest.param(
            feature('return {"out": inputs["amount"]}', features='["merchant_txn:count_1h"]'),
            [
                "on-demand feature 'amount_check': 'merchant_txn:count_1h' names an unknown "
                "feature view 'merchant_txn' (the repo defines: user_txn)"
            ],
            id="unknown-view",
        ),
    ],
)
def test_apply_checks_the_function_on_synthetic_rows(
    definition: str,
    expected: list[str],
    registry: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = fstore_apply(VIEWS + definition, tmp_path, monkeypatch, capsys)
    if not expected:
        assert code == 0, out
        return
    assert code == 1, out
    assert out.startswith("error: ")
    for part in expected:
        assert part in out
    assert not (registry / DB_FILE_NAME).exists()  # nothing registered


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        (
            'Aggregation(column="merchant", function="sum", windows=["1h", "24h"])',
            "feature view 'merchant_view': merchant_sum_1h, merchant_sum_24h: sum needs a "
            "numeric column; 'merchant' is string; aggregate an int64, float64 or bool column "
            "(or count 'merchant''s distinct values with approx_count_distinct)",
        ),
        (
            'Aggregation(column="ts", function="max", windows=["1h"], name="newest")',
            "feature view 'merchant_view': newest_1h: max needs a numeric column; 'ts' is "
            "timestamp",
        ),
        (
            'Aggregation(column="amout", function="mean", windows=["1h"])',
            "feature view 'merchant_view': amout_mean_1h: unknown column 'amout' (source 'txns' "
            "has ['amount', 'merchant', 'ts', 'user_id']); fix the column name or add it to the "
            "source's schema",
        ),
    ],
)
def test_apply_rejects_an_aggregation_over_a_wrong_typed_column(
    aggregation: str,
    expected: str,
    registry: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    view = (
        f"\nmerchant_view = FeatureView(name='merchant_view', entities=[user], source=txns, "
        f"tile='1m', aggregations=[{aggregation}])\n"
    )
    code, out = fstore_apply(VIEWS + view, tmp_path, monkeypatch, capsys)
    assert code == 1, out
    assert expected in out
    assert not (registry / DB_FILE_NAME).exists()


def test_synthetic_rows_hold_each_type_and_a_missing_value(tmp_path: Path) -> None:
    (tmp_path / "features.py").write_text(VIEWS + GOOD)
    defined = load_repo(tmp_path).on_demand["amount_check"]
    inputs = synthetic_inputs(defined)
    assert {name: str(column.dtype) for name, column in inputs.items()} == {
        "amount": "float64",
        "channel": "object",
        "items": "int64",
        "card_present": "bool",
        "amount_mean_1h": "float64",
    }
    assert inputs["channel"].tolist()[-1] is None
    assert bool(np.isnan(inputs["amount"][-1]) and np.isnan(inputs["amount_mean_1h"][-1]))
    check_function(defined)  # raises nothing
