"""The API's routers, one module per resource: predict, features, models, admin, drift, health
and the dashboard (ui)."""

from __future__ import annotations

__all__: list[str] = []
