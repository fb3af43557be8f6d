"""Request-time (on-demand) features: definition, fingerprint, registry versions, errors, and
the property that online reads and training sets agree on random inputs (real Redis and a real
offline log)."""

from __future__ import annotations

import random
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore import FeatureStore, Registry, load_repo
from featurestore.config import OfflineSettings, RedisSettings, RegistrySettings, Settings
from featurestore.errors import DefinitionError, OnDemandError, RequestError
from featurestore.events import EventBatch
from featurestore.offline.log import OfflineStore
from featurestore.on_demand import (
    OnDemandFeature,
    RequestSource,
    compute,
    evaluate,
    on_demand_feature,
)
from featurestore.registry import Status
from featurestore.writer import ViewWriter
from tests.redis_target import client_of, delete_matching

MINUTE = 60_000_000
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00Z
USERS = ("ann", "bob", "cy")

REPO = """
import numpy as np
from featurestore import Aggregation, Entity, FeatureService, FeatureView, KafkaSource
from featurestore.on_demand import RequestSource, on_demand_feature

user = Entity(name="user", join_keys=["user_id"])
txns = KafkaSource(name="txns", topic="t", timestamp_field="ts",
                   schema={"user_id": "string", "amount": "float64"})
user_txn = FeatureView(name="user_txn", entities=[user], source=txns, tile="1m",
    allowed_lateness="1d",
    aggregations=[Aggregation(function="count", windows=["1h"]),
                  Aggregation(column="amount", function="mean", windows=["10m", "1h"])])
txn = RequestSource(name="txn", schema={"amount": "float64", "channel": "string",
                                        "items": "int64"})

@on_demand_feature(request=[txn], features=["user_txn:amount_mean_1h", "user_txn:count_1h"],
                   outputs={"amount_vs_mean": "float64", "is_web": "bool",
                            "items_per_txn": "float64"})
def txn_ratios(inputs):
    mean = inputs["amount_mean_1h"]
    safe = np.where(mean > 0, mean, 1.0)
    return {
        "amount_vs_mean": np.where(mean > 0, inputs["amount"] / safe, np.nan),  # FACTOR
        "is_web": inputs["channel"] == "web",
        "items_per_txn": inputs["items"] / (inputs["count_1h"] + 1),
    }

fraud = FeatureService(name="fraud", features=["user_txn:amount_mean_10m",
                                               "txn_ratios:amount_vs_mean"])
"""
REFS = [
    "user_txn:amount_mean_10m",
    "txn_ratios:amount_vs_mean",
    "txn_ratios:is_web",
    "txn_ratios:items_per_txn",
]


def _feature(source: str) -> OnDemandFeature:
    txn = RequestSource(name="txn", schema={"amount": "float64"})
    return OnDemandFeature(
        name="f",
        request=[txn],
        outputs={"out": "float64"},
        function_name="f",
        function_source=source,
    )


def test_the_function_source_is_part_of_the_fingerprint() -> None:
    one = _feature("def f(inputs):\n    return {'out': inputs['amount'] * 2}\n")
    same = _feature("def f(inputs):\n    return {'out': inputs['amount'] * 2}\n")
    other = _feature("def f(inputs):\n    return {'out': inputs['amount'] * 3}\n")
    assert one.fingerprint() == same.fingerprint() != other.fingerprint()
    described = one.model_copy(update={"description": "why"})
    assert described.fingerprint() == one.fingerprint()


def test_the_decorator_stores_the_source_without_the_decorator() -> None:
    txn = RequestSource(name="txn", schema={"amount": "float64"})

    @on_demand_feature(request=[txn], outputs={"double": "float64"})
    def doubled(inputs):  # type: ignore[no-untyped-def]
        return {"double": inputs["amount"] * 2}

    assert doubled.function_source.startswith("def doubled(inputs)")
    assert compute(doubled, {"amount": np.array([1.5, np.nan])}, 2)["double"].tolist()[0] == 3.0


@pytest.mark.parametrize("rows", [1, 2, 20])  # one row, a few, past the small-batch checks
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("raise ValueError('no amount')", "ValueError: no amount"),
        ("return {'out': inputs['amount'][:0]}", "returned shape (0,) for"),
        ("return {'out': inputs['amount'][None, :]}", "returned shape (1,"),
        (
            "return {'out': np.full(len(inputs['amount']), 'a')}",
            "returned dtype <U1; it is declared float64",
        ),
        ("return {'other': inputs['amount']}", "returned outputs ['other']; it declares ['out']"),
        ("return inputs['amount']", "returned ndarray; it must return a dict"),
        ("return {'out': inputs['amount'] / 0.0}", "returned an infinite value"),
        ("inputs['amount'][0] = 1\n    return {'out': inputs['amount']}", "read-only"),
    ],
)
def test_a_failing_function_is_an_error_naming_the_feature(
    body: str, problem: str, rows: int
) -> None:
    feature = _feature(f"def f(inputs):\n    {body}\n")
    amounts = np.arange(1.0, rows + 1.0)
    with pytest.raises(OnDemandError, match="on-demand feature 'f'") as caught:
        compute(feature, {"amount": amounts}, rows)
    assert problem in str(caught.value)
    with pytest.raises(OnDemandError, match="on-demand feature 'f'") as caught:
        evaluate(feature, {"amount": amounts.tolist()}, {}, rows)  # serving's path
    assert problem in str(caught.value)


@pytest.mark.parametrize("rows", [1, 20])
@pytest.mark.parametrize(
    ("kind", "body", "problem"),
    [
        ("bool", "inputs['amount'] > 1.5", None),
        ("bool", "inputs['amount'] * 1.0", "returned dtype float64; it is declared bool"),
        ("int64", "inputs['amount'] * 1.0", "returned dtype float64; it is declared int64"),
        ("int64", "(inputs['amount'] * 0).astype(np.int32)", None),
        ("float64", "inputs['amount'].tolist()", None),  # a list is taken as an array
        ("float64", "inputs['amount'].astype('>f8')", None),  # float64, not native order
        ("float64", "np.where(inputs['amount'] > 1.5, -np.inf, 0.0)", "an infinite value"),
    ],
)
def test_outputs_are_checked_against_their_declared_type(
    kind: str, body: str, problem: str | None, rows: int
) -> None:
    feature = OnDemandFeature(
        name="f",
        request=[RequestSource(name="txn", schema={"amount": "float64"})],
        outputs={"out": kind},
        function_name="f",
        function_source=f"def f(inputs):\n    return {{'out': {body}}}\n",
    )
    amounts = [1.0] * (rows - 1) + [2.0]
    if problem is not None:
        with pytest.raises(OnDemandError, match=problem):
            evaluate(feature, {"amount": amounts}, {}, rows)
        return
    out = evaluate(feature, {"amount": amounts}, {}, rows)["out"]
    expected = compute(feature, {"amount": np.array(amounts)}, rows)["out"]
    assert out.dtype == np.float64 and out.shape == (rows,)
    assert out.tolist() == expected.tolist()


def test_an_array_of_request_values_is_left_writable_to_its_owner() -> None:
    feature = _feature("def f(inputs):\n    return {'out': inputs['amount'] * 2}\n")
    amounts = np.array([1.0, 2.0])  # a training set's column, handed in as it is
    assert evaluate(feature, {"amount": amounts}, {}, 2)["out"].tolist() == [2.0, 4.0]
    assert amounts.flags.writeable
    writer = _feature("def f(inputs):\n    inputs['amount'][0] = 9\n    return {'out': 1.0}\n")
    with pytest.raises(OnDemandError, match="read-only"):
        evaluate(writer, {"amount": amounts}, {}, 2)
    assert amounts.tolist() == [1.0, 2.0]


def test_definition_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="does not compile"):
        _feature("def f(inputs):\n    return {\n")
    with pytest.raises(ValueError, match="outputs are one of"):
        OnDemandFeature(
            name="g",
            request=[RequestSource(name="r", schema={"a": "float64"})],
            outputs={"out": "string"},
            function_name="g",
            function_source="def g(inputs):\n    return {}\n",
        )
    with pytest.raises(ValueError, match="request fields are one of"):
        RequestSource(name="r", schema={"at": "timestamp"})


def _apply(tmp_path: Path, text: str) -> tuple[Registry, Status]:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "features.py").write_text(text)
    registry = Registry(RegistrySettings(path=tmp_path / "registry"))
    result = registry.apply(load_repo(repo))
    return registry, result.status("txn_ratios", "on-demand feature")


def test_registry_versions_follow_the_function_and_pin_view_refs(tmp_path: Path) -> None:
    registry, status = _apply(tmp_path, REPO)
    assert status is Status.CREATED
    first = registry.get_on_demand("txn_ratios")
    assert first.version == 1
    assert first.feature.features == ["user_txn@1:amount_mean_1h", "user_txn@1:count_1h"]
    assert _apply(tmp_path, REPO)[1] is Status.UNCHANGED
    changed = REPO.replace('inputs["amount"] / safe', 'inputs["amount"] / safe * 1.0')
    assert _apply(tmp_path, changed)[1] is Status.UPDATED
    assert registry.get_on_demand("txn_ratios").version == 2
    assert registry.get_on_demand("txn_ratios", 1).fingerprint == first.fingerprint
    plan = registry.plan(["txn_ratios@1:is_web", "user_txn:count_1h"])
    assert [a.key for a in plan.asked] == ["txn_ratios@1:is_web", "user_txn@1:count_1h"]
    # The on-demand feature's inputs (pinned at apply), then the view ref asked, each once.
    assert list(plan.views) == ["user_txn@1:amount_mean_1h", "user_txn@1:count_1h"]


def test_unknown_inputs_and_outputs_fail_at_apply(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="has no feature 'amount_mean_2h'"):
        _apply(
            tmp_path,
            REPO.replace('"user_txn:amount_mean_1h", "user', '"user_txn:amount_mean_2h", "user'),
        )
    with pytest.raises(
        DefinitionError, match="on-demand feature 'txn_ratios' has no output 'nope'"
    ):
        _apply(tmp_path, REPO.replace('"txn_ratios:amount_vs_mean"]', '"txn_ratios:nope"]'))


@contextmanager
def _fresh_store(redis: str) -> Iterator[FeatureStore]:
    """A registry, an offline log and a Redis namespace of its own, the repo applied."""
    namespace = f"test-od-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "repo").mkdir()
        (root / "repo" / "features.py").write_text(REPO)
        settings = Settings(
            redis=RedisSettings(url=redis, namespace=namespace),
            offline=OfflineSettings(root=root / "offline"),
            registry=RegistrySettings(path=root / "registry"),
        )
        Registry(settings.registry).apply(load_repo(root / "repo"))
        feature_store = FeatureStore(settings)
        try:
            yield feature_store
        finally:
            feature_store.online.close()
            delete_matching(client_of(redis), f"{namespace}:*")


@pytest.fixture
def store(redis: str) -> Iterator[FeatureStore]:
    with _fresh_store(redis) as feature_store:
        yield feature_store


def _write(store: FeatureStore, rng: random.Random, n: int) -> int:
    """n random events over an hour; the time of the newest."""
    view = store.registry.get_view("user_txn")
    writer = ViewWriter(store.online, OfflineStore(store.settings.offline), view.view, 1)
    writer.load_positions()
    ts = np.sort(np.array([T0 + rng.randrange(60 * MINUTE) for _ in range(n)], dtype=np.int64))
    columns: dict[str, list[object]] = {
        "user_id": [rng.choice(USERS[:2]) for _ in range(n)],  # cy has no events: NaN means
        # Whole amounts: sums are exact, so a view's mean is the same bits online and offline
        # (sums of fractions may differ in the last bit by the order of additions).
        "amount": [float(rng.randrange(-5, 500)) for _ in range(n)],
    }
    batch = EventBatch(columns, ts, np.zeros(n, dtype=np.int64), np.arange(n, dtype=np.int64))
    assert writer.apply(batch, batch.last_offsets()).applied == n
    return int(ts[-1])


request_values = st.fixed_dictionaries(
    {
        "amount": st.lists(
            st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)), min_size=3, max_size=3
        ),
        "channel": st.lists(st.sampled_from(["web", "app", "pos"]), min_size=3, max_size=3),
        "items": st.lists(st.integers(0, 50), min_size=3, max_size=3),
    }
)


@pytest.mark.integration
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**32), request=request_values)
def test_online_values_equal_the_training_set(
    redis: str, seed: int, request: dict[str, list[object]]
) -> None:
    with _fresh_store(redis) as store:
        _check_online_equals_offline(store, seed, request)


def _check_online_equals_offline(
    store: FeatureStore, seed: int, request: dict[str, list[object]]
) -> None:
    rng = random.Random(seed)
    at = _write(store, rng, rng.randrange(1, 200)) if seed % 5 else T0 + 30 * MINUTE
    when = datetime.fromtimestamp(at / 1e6, UTC)
    entities = {"user_id": list(USERS)}
    online = store.get_online_features(entities, features=REFS, as_of=when, request=request)
    rows = pa.table(
        {
            "user_id": list(USERS),
            "event_timestamp": pa.array([at] * 3, pa.timestamp("us", tz="UTC")),
            "amount": pa.array(request["amount"], pa.float64()),
            "channel": request["channel"],
            "items": pa.array(request["items"], pa.int64()),
        }
    )
    offline = store.get_historical_features(rows, features=REFS, statuses=True).to_pydict()
    means = store.get_online_features(
        entities, features=["user_txn:amount_mean_1h", "user_txn:count_1h"], as_of=when
    ).features
    for ref in REFS:
        name = ref.split(":")[1]
        assert online.features[ref].values == offline[name], ref
        assert online.features[ref].statuses == offline[f"{name}__status"], ref
    # And the values are the function's, over what the views serve.
    for i in range(3):
        mean = means["user_txn:amount_mean_1h"].values[i]
        amount = request["amount"][i]
        ratio = online.features["txn_ratios:amount_vs_mean"].values[i]
        if mean is None or mean <= 0 or amount is None:
            assert ratio is None
        else:
            assert ratio == amount / mean  # type: ignore[operator]
        web = online.features["txn_ratios:is_web"].values[i]
        assert web == float(request["channel"][i] == "web")
        count = means["user_txn:count_1h"].values[i] or 0.0
        items = online.features["txn_ratios:items_per_txn"].values[i]
        assert items == request["items"][i] / (count + 1)  # type: ignore[operator]


@pytest.mark.integration
def test_errors_online_and_offline(store: FeatureStore) -> None:
    entities = {"user_id": ["ann"]}
    with pytest.raises(RequestError, match="needs request field 'amount'"):
        store.get_online_features(entities, features=["txn_ratios:is_web"], request={})
    with pytest.raises(RequestError, match="request field 'items' .* must hold int64"):
        store.get_online_features(
            entities,
            features=["txn_ratios:is_web"],
            request={"amount": [1.0], "channel": ["web"], "items": [1.5]},
        )
    rows = pa.table(
        {
            "user_id": ["ann"],
            "event_timestamp": pa.array([T0], pa.timestamp("us", tz="UTC")),
            "amount": [1.0],
        }
    )
    with pytest.raises(RequestError, match="needs request field 'channel'.*entity rows"):
        store.get_historical_features(rows, features=["txn_ratios:is_web"])


def test_an_on_demand_feature_cannot_take_a_view_name(tmp_path: Path) -> None:
    clash = REPO.replace(
        "@on_demand_feature(request=[txn],", '@on_demand_feature(name="user_txn", request=[txn],'
    ).replace('"txn_ratios:amount_vs_mean"', '"user_txn:count_1h"')
    with pytest.raises(DefinitionError, match="'user_txn' has the name of a feature view"):
        _apply(tmp_path, clash)
