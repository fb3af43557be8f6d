"""Load a feature repo: the folder of Python files in which users write their definitions.

Each top-level `*.py` file is imported by path under a unique module name, so a repo file called
`features.py` never collides with a module of that name elsewhere, and loading twice (after an
edit) reads the files afresh. While the repo loads, its folder sits first on `sys.path`, so
files can import each other as scripts in that folder would (`from entities import user`).
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import reprlib
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from pydantic import BaseModel, ValidationError

from featurestore.definitions import Entity, FeatureService, FeatureView, KafkaSource
from featurestore.errors import DefinitionError
from featurestore.on_demand import OnDemandFeature, RequestSource
from featurestore.on_demand_check import check_function

__all__ = [
    "Definition",
    "FeatureRef",
    "RepoContents",
    "kind_of",
    "load_repo",
    "parse_ref",
]

Definition = Entity | KafkaSource | FeatureView | FeatureService | OnDemandFeature | RequestSource

_KINDS: dict[str, str] = {
    "Entity": "entity",
    "KafkaSource": "source",
    "FeatureView": "feature view",
    "FeatureService": "feature service",
    "OnDemandFeature": "on-demand feature",
    "RequestSource": "request source",
    "Aggregation": "aggregation",
}
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_REF = re.compile(rf"^({_IDENT})(?:@([1-9][0-9]*))?:({_IDENT})$")

# sys.path and sys.modules are process-wide: one repo loads at a time.
_LOADING = threading.Lock()
_MODULE_IDS = itertools.count()
_MODULE_PREFIX = "_fstore_repo"


def kind_of(obj: BaseModel) -> str:
    """How messages name a definition's type: 'feature view', 'source', ..."""
    return _KINDS.get(type(obj).__name__, type(obj).__name__)


@dataclass(frozen=True)
class FeatureRef:
    """`view:feature`, or `view@version:feature` pinned to one registered version."""

    view: str
    feature: str
    version: int | None = None

    def __str__(self) -> str:
        pin = "" if self.version is None else f"@{self.version}"
        return f"{self.view}{pin}:{self.feature}"


def parse_ref(ref: str) -> FeatureRef:
    """Split a feature reference; a version pin keeps a model on the view it was trained with.

    >>> parse_ref("user_txn@2:amount_sum_10m")
    FeatureRef(view='user_txn', feature='amount_sum_10m', version=2)
    """
    match = _REF.match(ref)
    if match is None:
        raise DefinitionError(
            f"{ref!r} is not a feature reference like 'user_txn:amount_sum_10m' "
            f"or 'user_txn@2:amount_sum_10m'"
        )
    view, version, feature = match.groups()
    return FeatureRef(view, feature, None if version is None else int(version))


@dataclass(frozen=True)
class RepoContents:
    """The definitions of a feature repo, each kind keyed by name."""

    entities: dict[str, Entity] = field(default_factory=dict)
    sources: dict[str, KafkaSource] = field(default_factory=dict)
    views: dict[str, FeatureView] = field(default_factory=dict)
    services: dict[str, FeatureService] = field(default_factory=dict)
    on_demand: dict[str, OnDemandFeature] = field(default_factory=dict)

    def check_refs(self) -> None:
        """Fail on a service feature the repo does not define, before anything is registered.

        Pinned refs (`view@2:feature`) name a registered version, so only their view is checked
        here; the registry checks the rest when it applies the repo.
        """
        for name in sorted(set(self.on_demand) & set(self.views)):
            raise DefinitionError(
                f"on-demand feature {name!r} has the name of a feature view; rename one of them"
            )
        owners: list[tuple[str, list[str]]] = [
            (f"on-demand feature {f.name!r}", f.features) for f in self.on_demand.values()
        ]
        owners += [(f"feature service {s.name!r}", s.refs()) for s in self.services.values()]
        for owner, refs in owners:
            for text in refs:
                try:
                    ref = parse_ref(text)
                except DefinitionError as exc:
                    raise DefinitionError(f"{owner}: {exc}") from None
                on_demand = self.on_demand.get(ref.view)
                if on_demand is not None and owner.startswith("feature service"):
                    if ref.version is None and ref.feature not in on_demand.outputs:
                        raise DefinitionError(
                            f"{owner}: on-demand feature {on_demand.name!r} has no output "
                            f"{ref.feature!r} (it has: {', '.join(on_demand.outputs)})"
                        )
                    continue
                view = self.views.get(ref.view)
                if view is None:
                    known = ", ".join(sorted(self.views)) or "none"
                    raise DefinitionError(
                        f"{owner}: {text!r} names an unknown feature "
                        f"view {ref.view!r} (the repo defines: {known})"
                    )
                if ref.version is None and ref.feature not in view.feature_names():
                    raise DefinitionError(
                        f"{owner}: feature view {view.name!r} has no "
                        f"feature {ref.feature!r} (it has: {', '.join(view.feature_names())})"
                    )


def load_repo(path: str | Path) -> RepoContents:
    """Import a feature repo folder (or one .py file) and collect its module-level definitions.

    Definitions nested in others (the source of a view, a view listed in a service) count too, and
    one name may appear in several files as long as the definition is the same object or equal
    (re-exported by an import); two different definitions of one name are an error.
    """
    given = Path(path).expanduser()
    if given.is_dir():
        root = given.resolve()
        files = sorted(file for file in root.glob("*.py") if not file.name.startswith("."))
        if not files:
            raise DefinitionError(f"{given} holds no .py files; pass the feature repo folder")
    elif given.is_file() and given.suffix == ".py":
        root, files = given.resolve().parent, [given.resolve()]
    else:
        raise DefinitionError(f"{given} is neither a folder nor a .py file")

    collector = _Collector()
    with _repo_on_path(root):
        for file in files:
            module = _import(file, root, set(files))
            for var, value in vars(module).items():
                if isinstance(value, Definition):
                    collector.add(value, f"{file.relative_to(root)} (variable {var})")
    contents = collector.contents()
    contents.check_refs()
    for feature in contents.on_demand.values():
        check_function(feature)  # its function, on a few synthetic rows
    return contents


class _Collector:
    """Gathers definitions by (kind, name), refusing two different ones under one name."""

    def __init__(self) -> None:
        self._found: dict[tuple[str, str], tuple[Definition, str]] = {}

    def add(self, obj: Definition, origin: str) -> None:
        kind = kind_of(obj)
        seen = self._found.setdefault((kind, obj.name), (obj, origin))
        if seen[0] != obj:
            raise DefinitionError(
                f"{kind} {obj.name!r} is defined twice, differently: in {seen[1]} and in "
                f"{origin}; rename one, or define it once and import it"
            )
        inside = f"{origin}, inside {kind} {obj.name!r}"
        if isinstance(obj, FeatureView):
            for entity in obj.entities:
                self.add(entity, inside)
            self.add(obj.source, inside)
        elif isinstance(obj, FeatureService):
            for item in obj.features:
                if isinstance(item, FeatureView):
                    self.add(item, inside)
        elif isinstance(obj, OnDemandFeature):
            for source in obj.request:
                self.add(source, inside)

    def contents(self) -> RepoContents:
        found = [obj for _, (obj, _) in sorted(self._found.items())]
        return RepoContents(
            entities={obj.name: obj for obj in found if isinstance(obj, Entity)},
            sources={obj.name: obj for obj in found if isinstance(obj, KafkaSource)},
            views={obj.name: obj for obj in found if isinstance(obj, FeatureView)},
            services={obj.name: obj for obj in found if isinstance(obj, FeatureService)},
            on_demand={obj.name: obj for obj in found if isinstance(obj, OnDemandFeature)},
        )


@contextmanager
def _repo_on_path(root: Path) -> Iterator[None]:
    """Make repo files importable by each other, and forget them afterwards.

    Forgetting means a later load sees edits. Modules also reachable through another sys.path
    entry (a virtualenv or the project itself inside the folder) are kept: dropping those would
    give later imports second copies of their classes.
    """
    with _LOADING:
        before = set(sys.modules)
        # An entry above the folder reaches its files under other (dotted) names: not an alias.
        others = [
            entry
            for entry in (Path(text).resolve() for text in sys.path if text)
            if entry == root or not root.is_relative_to(entry)
        ]
        sys.path.insert(0, str(root))
        # No .pyc files beside the user's sources: a .pyc is trusted when the source has the same
        # size and mtime in whole seconds, so an edit within a second could load stale code.
        write_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
        try:
            yield
        finally:
            sys.dont_write_bytecode = write_bytecode
            sys.path.remove(str(root))
            for name in set(sys.modules) - before:
                if _loaded_from(sys.modules[name], root, others):
                    del sys.modules[name]


def _loaded_from(module: ModuleType, root: Path, others: list[Path]) -> bool:
    if module.__name__.startswith(_MODULE_PREFIX):
        return True  # ours, under its unique name or its plain alias
    origin = getattr(module, "__file__", None)
    if origin is None:
        return False
    file = Path(origin).resolve()
    return file.is_relative_to(root) and not any(file.is_relative_to(o) for o in others)


def _import(file: Path, root: Path, repo_files: set[Path]) -> ModuleType:
    existing = sys.modules.get(file.stem)
    origin = getattr(existing, "__file__", None)
    if existing is not None and origin is not None and Path(origin).resolve() == file:
        return existing  # a sibling imported it already (`from entities import user`)
    name = f"{_MODULE_PREFIX}{next(_MODULE_IDS)}_{file.stem}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise DefinitionError(f"{file.relative_to(root)} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    sys.modules.setdefault(file.stem, module)  # so `import <stem>` in a sibling gets this module
    try:
        spec.loader.exec_module(module)
    except ValidationError as exc:
        where = _location(exc, root, repo_files, file)
        raise DefinitionError(f"{where}: {_describe(exc)}") from exc
    except Exception as exc:
        where = _location(exc, root, repo_files, file)
        raise DefinitionError(f"{where}: {type(exc).__name__}: {exc}") from exc
    return module


def _location(exc: Exception, root: Path, repo_files: set[Path], default: Path) -> str:
    """`file:line` of the innermost repo-file line in the traceback: where the user should look."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{_relative(Path(exc.filename), root)}:{exc.lineno}"
    where = str(_relative(default, root))
    for frame, line in traceback.walk_tb(exc.__traceback__):
        filename = Path(frame.f_code.co_filename)
        if filename in repo_files:
            where = f"{_relative(filename, root)}:{line}"
    return where


def _relative(file: Path, root: Path) -> Path:
    return file.relative_to(root) if file.is_relative_to(root) else file


def _describe(exc: ValidationError) -> str:
    """One line naming the object and each problem, in the user's terms rather than pydantic's."""
    kind = _KINDS.get(exc.title, exc.title)
    name = _object_name(exc)
    subject = kind if name is None else f"{kind} {name!r}"
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        problem = error["msg"].removeprefix("Value error, ")
        if error["loc"]:
            problem = f"{'.'.join(str(part) for part in error['loc'])}: {problem}"
            if error["type"] != "missing":
                problem += f" (got {reprlib.repr(error['input'])})"
        problems.append(problem)
    text = "; ".join(problems)
    # The view's own checks already start with "feature view 'name':".
    return text if text.startswith(subject) else f"{subject}: {text}"


def _object_name(exc: ValidationError) -> str | None:
    """The `name=` passed to the failing constructor.

    A field error carries only the bad field, so the name comes from pydantic's own frame, which
    holds the keyword arguments (`data` in `__init__`, `obj` in `model_validate`).
    """
    frames = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
    for frame in reversed(frames):
        if not str(frame.f_globals.get("__name__", "")).startswith("pydantic"):
            continue
        for argument in ("data", "obj"):
            value = frame.f_locals.get(argument)
            if isinstance(value, dict) and isinstance(value.get("name"), str):
                return str(value["name"])
    return None
