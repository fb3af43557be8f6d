"""Online serving: FastAPI app, model scoring and rollout (built on `featurestore`)."""

from __future__ import annotations

__all__: list[str] = []
