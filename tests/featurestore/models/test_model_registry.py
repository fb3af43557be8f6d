"""The model registry on a real database (a SQLite file, a PostgreSQL server) and real artifacts:
versions, the artifact hash, the promotion gate, rollback, traffic, the audit history, the
generation counter, replicas, promotions at once."""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import lightgbm as lgb
import pytest

from featurestore.errors import RegistryError
from featurestore.models import (
    CANARY,
    PRODUCTION,
    SHADOW,
    ModelRegistry,
    PromotionRefused,
    Rollout,
    Signature,
)
from tests.featurestore.models.conftest import SIGNATURE, Register


def test_versions_are_numbered_per_model_and_read_back(
    models_registry: ModelRegistry, register: Register, model_text: str
) -> None:
    before = datetime.now(UTC)
    first = register("fraud", auc=0.8)
    second = register("fraud", auc=0.82)
    other = register("churn", auc=0.7)

    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert models_registry.models() == ["churn", "fraud"]
    assert models_registry.versions("fraud") == [first, second]
    assert models_registry.get("fraud", 2) == second
    assert models_registry.get("fraud", "2") == second
    assert second.artifact == models_registry.root / "fraud" / "v2" / "model.txt"
    assert second.signature == SIGNATURE
    assert second.metrics == {"auc": 0.82}
    assert before <= second.created_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert second.created_at.tzinfo is UTC
    assert models_registry.load_text(second) == model_text
    assert lgb.Booster(model_str=models_registry.load_text(second)).num_trees() == 3
    assert not list(second.artifact.parent.glob(".*.tmp"))  # the temporary file was renamed


def test_unknown_names_say_what_exists(models_registry: ModelRegistry, register: Register) -> None:
    register("fraud")
    register("fraud")
    models_registry.set_alias("fraud", PRODUCTION, 2, who="alice")

    with pytest.raises(RegistryError, match=r"unknown model 'frad' \(registered: fraud"):
        models_registry.get("frad")
    with pytest.raises(
        RegistryError, match="model 'fraud' has versions 1, 2; aliases: production -> 2"
    ):
        models_registry.get("fraud", 3)
    with pytest.raises(RegistryError, match="no alias 'canary'.*production -> 2"):
        models_registry.get("fraud", CANARY)
    with pytest.raises(RegistryError, match="model name 'a/b' is invalid"):
        register("a/b")


def test_get_without_a_version_is_production(
    models_registry: ModelRegistry, register: Register
) -> None:
    register("fraud")
    with pytest.raises(RegistryError, match="no alias 'production'"):
        models_registry.get("fraud")
    register("fraud")
    models_registry.set_alias("fraud", PRODUCTION, 2, who="alice")

    assert models_registry.get("fraud").version == 2
    assert models_registry.get("fraud", PRODUCTION).version == 2


def test_a_tampered_artifact_is_detected(
    models_registry: ModelRegistry, register: Register
) -> None:
    version = register("fraud")
    version.artifact.write_text(version.artifact.read_text() + "\n")

    with pytest.raises(RegistryError, match="SHA-256 .* modified or corrupted"):
        models_registry.load_text(version)
    version.artifact.unlink()
    with pytest.raises(RegistryError, match="cannot read the artifact of fraud@1"):
        models_registry.load_text(version)


def test_only_lightgbm_text_is_registered(
    models_registry: ModelRegistry, register: Register
) -> None:
    with pytest.raises(RegistryError, match="not a LightGBM text model"):
        models_registry.register(
            "fraud",
            "\x80\x04pickle",
            objective="binary",  # type: ignore[arg-type]
            signature=SIGNATURE,
            label="y",
            dataset=register().dataset,
            views={},
            params={},
            metrics={"auc": 0.5},
            primary_metric="auc",
            profile={},
            who="alice",
        )
    with pytest.raises(RegistryError, match="lack the primary metric 'auc'"):
        register("fraud", logloss=0.3)
    with pytest.raises(RegistryError, match="must be finite"):
        register("fraud", auc=float("nan"))
    assert [v.version for v in models_registry.versions("fraud")] == [1]
    assert not (models_registry.root / "fraud" / "v2").exists()


def test_first_promotion_passes_the_gate(
    models_registry: ModelRegistry, register: Register
) -> None:
    register("fraud", auc=0.51)

    entry = models_registry.set_alias("fraud", PRODUCTION, 1, who="alice")

    assert (entry.from_version, entry.to_version, entry.detail) == (None, 1, {})
    assert models_registry.rollout("fraud") == Rollout("fraud", {PRODUCTION: 1}, {PRODUCTION: 1.0})


def test_the_gate_refuses_a_worse_candidate_unless_forced_with_a_reason(
    models_registry: ModelRegistry, register: Register
) -> None:
    register("fraud", auc=0.90)
    register("fraud", auc=0.85)
    register("fraud", auc=0.895)
    models_registry.set_alias("fraud", PRODUCTION, 1, who="alice")
    entries = len(models_registry.history("fraud"))

    with pytest.raises(PromotionRefused, match=r"fraud@2 has auc 0\.85, worse than production"):
        models_registry.set_alias("fraud", PRODUCTION, 2, who="bob")
    with pytest.raises(RegistryError, match="needs a reason"):
        models_registry.set_alias("fraud", PRODUCTION, 2, who="bob", force=True)
    with pytest.raises(RegistryError, match="needs a reason"):
        models_registry.set_alias("fraud", PRODUCTION, 2, who="bob", force=True, reason="  ")
    assert models_registry.get("fraud").version == 1
    assert len(models_registry.history("fraud")) == entries  # refusals change nothing

    # Within the tolerance passes; a wider tolerance lets the worse one through too.
    within = models_registry.set_alias("fraud", PRODUCTION, 3, who="bob")
    assert within.detail["gate"] == {"metric": "auc", "candidate": 0.895, "production": 0.9}
    models_registry.set_alias("fraud", PRODUCTION, 1, who="bob")
    models_registry.set_alias("fraud", PRODUCTION, 2, who="bob", tolerance=0.06)

    models_registry.set_alias("fraud", PRODUCTION, 1, who="bob")
    forced = models_registry.set_alias(
        "fraud", PRODUCTION, 2, who="carol", force=True, reason="fixes a leak"
    )
    assert (forced.from_version, forced.to_version, forced.reason) == (1, 2, "fixes a leak")
    assert forced.detail["forced"] is True
    assert models_registry.get("fraud").version == 2


def test_the_gate_knows_lower_is_better_for_rmse(
    models_registry: ModelRegistry, register: Register
) -> None:
    register("spend", rmse=10.0)
    register("spend", rmse=10.5)
    register("spend", rmse=9.0)
    models_registry.set_alias("spend", PRODUCTION, 1, who="alice")

    with pytest.raises(PromotionRefused, match="lower is better"):
        models_registry.set_alias("spend", PRODUCTION, 2, who="alice")
    models_registry.set_alias("spend", PRODUCTION, 3, who="alice")
    assert models_registry.get("spend").version == 3


def test_versions_judged_on_different_metrics_need_force(
    models_registry: ModelRegistry, register: Register
) -> None:
    register("fraud", auc=0.9)
    register("fraud", rmse=0.1)
    models_registry.set_alias("fraud", PRODUCTION, 1, who="alice")

    with pytest.raises(PromotionRefused, match="cannot be compared"):
        models_registry.set_alias("fraud", PRODUCTION, 2, who="alice")


def test_other_aliases_are_not_gated(models_registry: ModelRegistry, register: Register) -> None:
    register("fraud", auc=0.9)
    register("fraud", auc=0.6)
    models_registry.set_alias("fraud", PRODUCTION, 1, who="alice")

    models_registry.set_alias("fraud", CANARY, 2, who="alice")
    models_registry.set_alias("fraud", SHADOW, 2, who="alice")

    assert models_registry.rollout("fraud").aliases == {CANARY: 2, PRODUCTION: 1, SHADOW: 2}


def test_rollback_restores_the_previous_version_and_is_audited(
    models_registry: ModelRegistry, register: Register
) -> None:
    for _ in range(3):
        register("fraud", auc=0.8)
    models_registry.set_alias("fraud", PRODUCTION, 1, who="alice")
    models_registry.set_alias("fraud", PRODUCTION, 2, who="alice")
    models_registry.set_alias("fraud", PRODUCTION, 3, who="alice")
    models_registry.set_alias("fraud", PRODUCTION, 3, who="alice")  # moves nothing

    entry = models_registry.rollback("fraud", who="bob", reason="p99 latency")

    assert models_registry.get("fraud").version == 2
    assert (entry.action, entry.alias, entry.from_version, entry.to_version) == (
        "rollback",
        PRODUCTION,
        3,
        2,
    )
    assert (entry.who, entry.reason) == ("bob", "p99 latency")
    assert models_registry.history("fraud")[-1] == entry
    # A rollback is a change: rolling back again undoes it.
    models_registry.rollback("fraud", who="bob")
    assert models_registry.get("fraud").version == 3


def test_rollback_brings_back_a_removed_alias(
    models_registry: ModelRegistry, register: Register
) -> None:
    register("fraud")
    models_registry.set_alias("fraud", CANARY, 1, who="alice")
    models_registry.remove_alias("fraud", CANARY, who="alice")
    assert CANARY not in models_registry.rollout("fraud").aliases

    models_registry.rollback("fraud", CANARY, who="alice")

    assert models_registry.rollout("fraud").aliases[CANARY] == 1


def test_nothing_to_roll_back_to_is_a_clear_error(
    models_registry: ModelRegistry, register: Register
) -> None:
    register("fraud")
    with pytest.raises(RegistryError, match="was never changed: nothing to roll back"):
        models_registry.rollback("fraud", who="alice")
    models_registry.set_alias("fraud", PRODUCTION, 1, who="alice")
    with pytest.raises(RegistryError, match="did not exist before its last change"):
        models_registry.rollback("fraud", who="alice")
    assert models_registry.get("fraud").version == 1


def test_traffic_is_validated_and_normalised(
    models_registry: ModelRegistry, register: Register
) -> None:
    register("fraud")
    register("fraud")
    models_registry.set_alias("fraud", PRODUCTION, 1, who="alice")
    assert models_registry.rollout("fraud").traffic == {PRODUCTION: 1.0}

    with pytest.raises(RegistryError, match="no alias 'canary'.*production -> 1"):
        models_registry.set_traffic("fraud", {PRODUCTION: 90, CANARY: 10}, who="alice")
    models_registry.set_alias("fraud", CANARY, 2, who="alice")
    models_registry.set_alias("fraud", SHADOW, 2, who="alice")
    with pytest.raises(RegistryError, match="shadow model mirrors the traffic"):
        models_registry.set_traffic("fraud", {PRODUCTION: 90, SHADOW: 10}, who="alice")
    with pytest.raises(RegistryError, match="finite numbers >= 0"):
        models_registry.set_traffic("fraud", {PRODUCTION: -1, CANARY: 2}, who="alice")
    with pytest.raises(RegistryError, match="sum to 0"):
        models_registry.set_traffic("fraud", {PRODUCTION: 0}, who="alice")
    with pytest.raises(RegistryError, match="empty"):
        models_registry.set_traffic("fraud", {}, who="alice")

    entry = models_registry.set_traffic(
        "fraud", {PRODUCTION: 90, CANARY: 10}, who="alice", reason="canary"
    )

    rollout = models_registry.rollout("fraud")
    assert rollout.traffic == pytest.approx({CANARY: 0.1, PRODUCTION: 0.9})
    assert sum(rollout.traffic.values()) == pytest.approx(1.0)
    assert entry.detail == {
        "weights": rollout.traffic,
        "previous": {PRODUCTION: 1.0},
    }
    # An alias that takes traffic stays until the traffic leaves it.
    with pytest.raises(RegistryError, match="takes 10% of the traffic"):
        models_registry.remove_alias("fraud", CANARY, who="alice")
    models_registry.set_traffic("fraud", {PRODUCTION: 1, CANARY: 0}, who="alice")
    assert models_registry.rollout("fraud").traffic == {PRODUCTION: 1.0}
    models_registry.remove_alias("fraud", CANARY, who="alice")
    assert models_registry.rollout("fraud").aliases == {PRODUCTION: 1, SHADOW: 2}


def test_history_records_every_change_in_order(
    models_registry: ModelRegistry, register: Register
) -> None:
    register("fraud", who="alice")
    register("churn", who="alice")
    models_registry.set_alias("fraud", PRODUCTION, 1, who="bob", reason="launch")
    models_registry.set_alias("fraud", CANARY, 1, who="bob")
    models_registry.set_traffic("fraud", {PRODUCTION: 3, CANARY: 1}, who="carol")
    models_registry.set_traffic("fraud", {PRODUCTION: 1}, who="carol")
    models_registry.remove_alias("fraud", CANARY, who="dave", reason="done")

    history = models_registry.history("fraud")

    assert [(e.action, e.alias, e.from_version, e.to_version, e.who) for e in history] == [
        ("register", None, None, 1, "alice"),
        ("alias", PRODUCTION, None, 1, "bob"),
        ("alias", CANARY, None, 1, "bob"),
        ("traffic", None, None, None, "carol"),
        ("traffic", None, None, None, "carol"),
        ("remove_alias", CANARY, 1, None, "dave"),
    ]
    assert [e.reason for e in history] == ["", "launch", "", "", "", "done"]
    assert [e.id for e in history] == sorted(e.id for e in history)
    assert all(e.model == "fraud" and e.at.tzinfo is UTC for e in history)
    assert [e.at for e in history] == sorted(e.at for e in history)
    assert history[0].detail["sha256"] == models_registry.get("fraud", 1).artifact_sha256
    assert [e.model for e in models_registry.history()] == ["fraud", "churn"] + ["fraud"] * 5


def test_the_audit_history_cannot_be_rewritten(
    models_registry: ModelRegistry, register: Register
) -> None:
    register("fraud")
    statements = ["UPDATE audit SET who = 'mallory'", "DELETE FROM audit"]
    if models_registry.db.backend == "postgresql":
        statements.append("TRUNCATE audit")
    for statement in statements:
        # Straight at the database, past every check of this package: the triggers refuse.
        with (
            pytest.raises(RegistryError, match="append-only"),
            models_registry.db.connect() as conn,
        ):
            conn.execute(statement)
    assert [e.who for e in models_registry.history("fraud")] == ["alice"]


def test_generation_moves_on_every_change_and_not_on_reads(
    models_registry: ModelRegistry, register: Register
) -> None:
    seen = [models_registry.generation()]

    def moved() -> bool:
        seen.append(models_registry.generation())
        return seen[-1] > seen[-2]

    register("fraud")
    assert moved()
    register("fraud")
    assert moved()
    models_registry.set_alias("fraud", PRODUCTION, 1, who="a")
    assert moved()
    models_registry.set_alias("fraud", CANARY, 2, who="a")
    assert moved()
    models_registry.set_traffic("fraud", {PRODUCTION: 1, CANARY: 1}, who="a")
    assert moved()
    models_registry.set_alias("fraud", PRODUCTION, 2, who="a")
    assert moved()
    models_registry.rollback("fraud", who="a")
    assert moved()
    models_registry.set_traffic("fraud", {PRODUCTION: 1}, who="a")
    assert moved()
    models_registry.remove_alias("fraud", CANARY, who="a")
    assert moved()

    models_registry.get("fraud")
    models_registry.versions("fraud")
    models_registry.rollout("fraud")
    models_registry.history()
    models_registry.load_text(models_registry.get("fraud"))
    assert not moved()
    with pytest.raises(RegistryError):
        models_registry.set_alias("fraud", PRODUCTION, 9, who="a")
    assert not moved()  # a refused change changes nothing


def test_two_registries_on_one_folder_see_each_others_changes(
    tmp_path: Path, register: Register, models_registry: ModelRegistry
) -> None:
    replica = ModelRegistry(models_registry.config)
    assert replica.generation() == models_registry.generation()

    register("fraud")
    assert replica.get("fraud", 1) == models_registry.get("fraud", 1)
    replica.set_alias("fraud", PRODUCTION, 1, who="replica")
    assert models_registry.get("fraud").version == 1
    assert models_registry.generation() == replica.generation()
    assert models_registry.history("fraud")[-1].who == "replica"
    assert replica.load_text(replica.get("fraud")) == models_registry.load_text(
        models_registry.get("fraud")
    )


def test_concurrent_registers_take_distinct_versions(
    register: Register, models_registry: ModelRegistry, model_text: str
) -> None:
    replicas = [ModelRegistry(models_registry.config) for _ in range(4)]
    version = register("fraud")

    def register_five(registry: ModelRegistry) -> list[int]:
        return [
            registry.register(
                "fraud",
                model_text,
                objective=version.objective,
                signature=version.signature,
                label=version.label,
                dataset=version.dataset,
                views=version.views,
                params=version.params,
                metrics=version.metrics,
                primary_metric=version.primary_metric,
                profile=version.profile,
                who="worker",
            ).version
            for _ in range(5)
        ]

    with ThreadPoolExecutor(4) as pool:
        numbers = [n for batch in pool.map(register_five, replicas) for n in batch]

    assert sorted(numbers) == list(range(2, 22))
    assert [v.version for v in models_registry.versions("fraud")] == list(range(1, 22))
    assert models_registry.generation() == 21


def test_signature_round_trips() -> None:
    assert Signature.from_dict(SIGNATURE.to_dict()) == SIGNATURE


def test_concurrent_promotions_chain_in_the_audit_history(
    register: Register, models_registry: ModelRegistry
) -> None:
    """Promotions at once are serialised by the write lock: each audit entry's `from` is the
    version the previous one set, and production ends on the last entry's version."""
    numbers = [register("fraud").version for _ in range(4)]
    models_registry.set_alias("fraud", PRODUCTION, numbers[0], who="setup")
    replicas = [ModelRegistry(models_registry.config) for _ in range(4)]
    barrier = threading.Barrier(len(replicas))

    def promote(pair: tuple[ModelRegistry, int]) -> None:
        registry, number = pair
        barrier.wait()
        registry.set_alias("fraud", PRODUCTION, number, who=f"w{number}", reason="race", force=True)

    with ThreadPoolExecutor(len(replicas)) as pool:
        list(pool.map(promote, zip(replicas, [*numbers[1:], numbers[0]], strict=True)))

    moves = [e for e in models_registry.history("fraud") if e.action == "alias"]
    assert len(moves) == 1 + len(replicas)
    for before, after in itertools.pairwise(moves):
        assert after.from_version == before.to_version
    assert models_registry.get("fraud").version == moves[-1].to_version
    assert sorted(e.who for e in moves[1:]) == sorted(f"w{n}" for n in numbers)
