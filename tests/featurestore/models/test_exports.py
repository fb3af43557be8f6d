"""featurestore.models.registry keeps the names the serving app imports from it.

(That featurestore.models.__all__ is what the package exports is checked for every package in
tests/test_public_api.py.)
"""

from __future__ import annotations

import featurestore.models
import featurestore.models.registry


def test_the_registry_module_keeps_the_contract_names() -> None:
    """The serving app imports these from featurestore.models.registry."""
    for name in featurestore.models.registry.__all__:
        assert getattr(featurestore.models.registry, name) is getattr(featurestore.models, name)
