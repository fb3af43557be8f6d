"""The shipped example repo (and so the README's example) loads and validates."""

from __future__ import annotations

from pathlib import Path

from featurestore import load_repo

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_example_repo_loads() -> None:
    contents = load_repo(EXAMPLES)
    assert set(contents.views) == {"user_txn"}
    contents.check_refs()
    assert "merchant_approx_count_distinct_24h" in contents.views["user_txn"].feature_names()
