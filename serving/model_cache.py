"""Loaded models and their hot reload.

A server holds one immutable `Snapshot`: every model's rollout (aliases, traffic) and a LightGBM
Booster per aliased version, with the Redis reads its pinned feature refs need worked out once.
A poller thread watches `ModelRegistry.generation()`; when it moves, the new versions are loaded
FIRST (Boosters already loaded are reused), then one assignment swaps the whole snapshot. A
request reads `cache.snapshot` once and works on that object to the end, so it never sees half a
reload, and a version stays alive for requests that hold it after it left the registry's aliases.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from featurestore.definitions import FeatureView
from featurestore.errors import FeatureStoreError
from featurestore.models.registry import PRODUCTION, SHADOW, ModelRegistry, ModelVersion, Rollout
from featurestore.on_demand import PreparedFeature
from featurestore.registry import Registry
from featurestore.tiles import TileLayout
from serving.errors import NotFound, Unavailable
from serving.metrics import ServingMetrics
from serving.single_row import SingleRowScorer
from serving.traffic_split import Split

__all__ = [
    "FeatureRead",
    "LoadedModel",
    "LoadedVersion",
    "ModelCache",
    "OnDemandStep",
    "Snapshot",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class FeatureRead:
    """One feature view version a model version reads, and where its features go."""

    view: str
    version: int
    layout: TileLayout
    join_keys: tuple[str, ...]
    columns: tuple[tuple[int, str], ...]  # (model column, feature name in the view)
    # The same as index arrays: model columns, and the view's feature positions in a read.
    targets: npt.NDArray[np.intp]
    sources: npt.NDArray[np.intp]
    on_demand_input: bool = False  # an on-demand feature of the model reads it: always read


@dataclass(frozen=True, eq=False)
class OnDemandStep:
    """One on-demand feature a model version computes per request, and where its outputs go."""

    feature: PreparedFeature  # compiled once, at load
    inputs: tuple[tuple[str, tuple[str, int], int], ...]  # (pinned ref, view key, position)
    outputs: tuple[tuple[int, str], ...]  # (model column, output name)


@dataclass(frozen=True)
class LoadedVersion:
    meta: ModelVersion
    booster: lgb.Booster
    single_row: SingleRowScorer | None  # one row's score without Booster.predict's set-up
    names: tuple[str, ...]  # model feature names, in the model's column order
    index: Mapping[str, int]  # name -> column
    reads: tuple[FeatureRead, ...]
    entity_keys: tuple[str, ...]  # the join keys a request must give
    on_demand: tuple[OnDemandStep, ...] = ()  # computed after the reads, before scoring

    @property
    def version(self) -> int:
        return self.meta.version


@dataclass(frozen=True)
class LoadedModel:
    name: str
    rollout: Rollout
    versions: Mapping[int, LoadedVersion]  # every version an alias points at
    split: Split | None  # None: no alias takes traffic
    route_keys: tuple[str, ...]  # the entity keys the traffic split hashes

    def for_alias(self, alias: str) -> LoadedVersion:
        if alias not in self.rollout.aliases:
            raise NotFound(
                f"model {self.name!r} has no alias {alias!r} "
                f"(its aliases: {', '.join(sorted(self.rollout.aliases)) or 'none'})"
            )
        return self.versions[self.rollout.aliases[alias]]

    @property
    def shadow(self) -> LoadedVersion | None:
        version = self.rollout.aliases.get(SHADOW)
        return None if version is None else self.versions[version]

    @property
    def feature_names(self) -> frozenset[str]:
        return frozenset(name for v in self.versions.values() for name in v.names)


@dataclass(frozen=True)
class Snapshot:
    generation: int
    models: Mapping[str, LoadedModel] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)  # model -> why it did not load

    def get(self, name: str) -> LoadedModel:
        model = self.models.get(name)
        if model is not None:
            return model
        if name in self.errors:
            raise Unavailable(f"model {name!r} could not be loaded: {self.errors[name]}")
        raise NotFound(
            f"unknown model {name!r} (served models: {', '.join(sorted(self.models)) or 'none'}); "
            "register it and point its production alias at a version"
        )


class ModelCache:
    """The current snapshot, and the poller that replaces it when the registry changes."""

    def __init__(
        self,
        registry: ModelRegistry,
        features: Registry,
        interval_s: float,
        metrics: ServingMetrics,
    ) -> None:
        self.registry = registry
        self.features = features
        self.interval_s = interval_s
        self.metrics = metrics
        self.snapshot = Snapshot(generation=-1)
        self._lock = threading.Lock()  # one refresh at a time (poller and admin endpoints)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self, force: bool = False) -> bool:
        """Load what changed and swap the snapshot; False when the registry did not move."""
        with self._lock:
            current = self.snapshot
            generation = self.registry.generation()
            if generation == current.generation and not force:
                return False
            models: dict[str, LoadedModel] = {}
            errors: dict[str, str] = {}
            for name in self.registry.models():
                try:
                    models[name] = self._load_model(name, current.models.get(name))
                except FeatureStoreError as exc:
                    # Keep serving what this model had; the error shows in /readyz.
                    log.error("model %s: not reloaded: %s", name, exc)
                    errors[name] = str(exc)
                    self.metrics.reloads.labels("error").inc()
                    if name in current.models:
                        models[name] = current.models[name]
            self.snapshot = Snapshot(generation, models, errors)
            self.metrics.reloads.labels("ok").inc()
            self.metrics.loaded_versions.set(sum(len(m.versions) for m in models.values()))
            return True

    def _load_model(self, name: str, previous: LoadedModel | None) -> LoadedModel:
        rollout = self.registry.rollout(name)
        versions: dict[int, LoadedVersion] = {}
        for number in sorted(set(rollout.aliases.values())):
            if previous is not None and number in previous.versions:
                versions[number] = previous.versions[number]
            else:
                versions[number] = self._load_version(self.registry.get(name, number))
        split = Split.from_rollout(name, rollout.aliases, rollout.traffic)
        anchor = rollout.aliases.get(PRODUCTION)
        if anchor is None and split is not None:
            anchor = split.versions[-1]
        route_keys = versions[anchor].entity_keys if anchor is not None else ()
        return LoadedModel(name, rollout, versions, split, route_keys)

    def _load_version(self, meta: ModelVersion) -> LoadedVersion:
        text = self.registry.load_text(meta)
        try:
            booster = lgb.Booster(model_str=text)
        except lgb.basic.LightGBMError as exc:
            raise Unavailable(f"{meta.ref}: the artifact is not a LightGBM model: {exc}") from exc
        specs = meta.signature.features
        if booster.num_feature() != len(specs):
            raise Unavailable(
                f"{meta.ref}: the artifact has {booster.num_feature()} features, its signature "
                f"{len(specs)}; re-register the model"
            )
        plan = self.features.plan([spec.ref for spec in specs])
        grouped: dict[tuple[str, int], list[tuple[int, str]]] = {}
        views = {}
        inputs: set[tuple[str, int]] = set()
        for registered, _feature in plan.views.values():
            views[(registered.name, registered.version)] = registered
        for column, asked in enumerate(plan.asked):
            if asked.on_demand is None:
                registered, feature = plan.views[asked.key]
                grouped.setdefault((registered.name, registered.version), []).append(
                    (column, feature)
                )
        steps = []
        for key, on_demand in plan.on_demand.items():
            refs = []
            for ref in on_demand.feature.features:
                registered, feature = plan.views[ref]
                view_key = (registered.name, registered.version)
                grouped.setdefault(view_key, [])
                inputs.add(view_key)
                order = [f.name for f in TileLayout(registered.view).features]
                refs.append((ref, view_key, order.index(feature)))
            outputs = tuple(
                (column, asked.feature)
                for column, asked in enumerate(plan.asked)
                if asked.key.rsplit(":", 1)[0] == key
            )
            steps.append(OnDemandStep(PreparedFeature.of(on_demand.feature), tuple(refs), outputs))
        reads = tuple(
            _feature_read(views[key].view, key[1], columns, key in inputs)
            for key, columns in grouped.items()
        )
        names = tuple(spec.name for spec in specs)
        keys = dict.fromkeys(k for read in reads for k in read.join_keys)
        keys.update(dict.fromkeys(meta.signature.entity_keys))
        log.info("loaded model %s (%d features)", meta.ref, len(names))
        return LoadedVersion(
            meta,
            booster,
            SingleRowScorer.of(booster),
            names,
            {n: i for i, n in enumerate(names)},
            reads,
            tuple(keys),
            tuple(steps),
        )

    # -- the poller
    def start(self) -> None:
        self.refresh(force=True)
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="fstore-model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.refresh()
            except Exception:
                # The registry is unreadable for now (a shared volume away, a locked file): keep
                # serving the snapshot we have and try again at the next tick. The thread must
                # outlive any one failure, or the server would silently stop following rollouts.
                log.exception("model registry not readable; keeping the loaded models")


def _feature_read(
    view: FeatureView, version: int, columns: list[tuple[int, str]], on_demand_input: bool
) -> FeatureRead:
    layout = TileLayout(view)
    order = [feature.name for feature in layout.features]  # as `read_views` returns them
    return FeatureRead(
        view=view.name,
        version=version,
        layout=layout,
        join_keys=tuple(view.join_keys),
        columns=tuple(columns),
        targets=np.array([column for column, _ in columns], dtype=np.intp),
        sources=np.array([order.index(feature) for _, feature in columns], dtype=np.intp),
        on_demand_input=on_demand_input,
    )
