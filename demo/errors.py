"""The demo's one error: what failed, and what to do about it."""

from __future__ import annotations

from featurestore.errors import FeatureStoreError

__all__ = ["DemoError"]


class DemoError(FeatureStoreError):
    """A demo step failed; `hint` tells the user what to try."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint
