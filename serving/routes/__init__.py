"""The API's routers, one module per resource: predict, features, models, admin, health."""

from __future__ import annotations

__all__: list[str] = []
