"""`/ui`: the dashboard page, its static files and the JSON it polls.

The page, its script and plotly's JavaScript (served from the installed `plotly` package, so
nothing is fetched from the internet and no third-party code lives in this repository) hold no
data and are open to all. The JSON endpoints need a key like the other reads (serving/auth.py:
overview `models:read`, drift `drift:read`): when keys exist the page asks for one and sends it
as a bearer token.
"""

from __future__ import annotations

import functools
import html
import importlib.util
import threading
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, HTMLResponse

from serving.auth import Guard
from serving.errors import NotFound, Unavailable
from serving.schemas import ErrorOut
from serving.state import serving_state
from serving.ui import STATIC
from serving.ui.overview import Dashboard

__all__ = ["router"]

router = APIRouter(tags=["dashboard"])

_MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
# Our own files change with the code: the browser checks its copy (ETag) on each load.
_OURS = {"Cache-Control": "no-cache"}
_VENDOR = {"Cache-Control": "public, max-age=86400"}
_JSON: dict[int | str, dict[str, Any]] = {
    200: {"description": "The dashboard's data.", "content": {"application/json": {}}},
    401: {"model": ErrorOut, "description": "No valid API key was sent."},
    403: {"model": ErrorOut, "description": "The key lacks the scope."},
}
_LOCK = threading.Lock()


@router.get("/ui", include_in_schema=False)
def page(request: Request) -> HTMLResponse:
    root = html.escape(str(request.scope.get("root_path", "")).rstrip("/"), quote=True)
    text = (STATIC / "index.html").read_text(encoding="utf-8").replace("{{root}}", root)
    return HTMLResponse(text, headers=_OURS)


@router.get("/ui/static/{name}", include_in_schema=False)
def static(name: str) -> FileResponse:
    path = _static_files().get(name)
    if path is None:
        raise NotFound(f"no dashboard file {name!r}")
    return FileResponse(path, media_type=_MEDIA_TYPES.get(path.suffix), headers=_OURS)


@router.get("/ui/vendor/plotly.min.js", include_in_schema=False)
def plotly_js() -> FileResponse:
    path = _plotly_js()
    if path is None:
        raise Unavailable(
            "plotly's JavaScript (plotly/package_data/plotly.min.js) is not installed: the "
            "dashboard's charts need the `plotly` package (`pip install plotly`, a dependency "
            "of fstore)"
        )
    return FileResponse(path, media_type="text/javascript", headers=_VENDOR)


# Plain `def`: Redis, SQLite and Kafka calls block, FastAPI runs these in its thread pool.
@router.get(
    "/ui/api/overview",
    dependencies=[Depends(Guard("models:read"))],
    responses=_JSON,
    response_class=Response,
    summary="Dashboard: feature views, models, live traffic and alerts",
)
def overview(request: Request) -> Response:
    return _json(dashboard(request).overview())


@router.get(
    "/ui/api/drift",
    dependencies=[Depends(Guard("drift:read"))],
    responses=_JSON,
    response_class=Response,
    summary="Dashboard: drift per model and feature over time",
)
def drift(request: Request) -> Response:
    return _json(dashboard(request).drift())


def dashboard(request: Request) -> Dashboard:
    """The app's dashboard state, made on first use (its traffic samples live with the app)."""
    app_state = request.app.state
    with _LOCK:
        found: Dashboard | None = getattr(app_state, "dashboard", None)
        if found is None:
            found = app_state.dashboard = Dashboard(serving_state(request))
    return found


def _json(body: dict[str, Any]) -> Response:
    return Response(
        orjson.dumps(body), media_type="application/json", headers={"Cache-Control": "no-store"}
    )


@functools.cache
def _static_files() -> dict[str, Path]:
    return {path.name: path for path in STATIC.iterdir() if path.is_file()}


@functools.cache
def _plotly_js() -> Path | None:
    # Found without importing plotly: the server needs only the file.
    spec = importlib.util.find_spec("plotly")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path
    return None
