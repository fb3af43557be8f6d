"""Each package's `__all__` is what it really exports, and every module says what it offers.

No hard-coded lists: `__all__` is the one list, and these tests hold it to the code. A package
exports what its `__init__` defines or imports from inside the package (names it takes from
elsewhere, like `typing.Any`, are its own business); every such name is in `__all__`, and every
name in `__all__` resolves.
"""

from __future__ import annotations

import ast
import importlib
import tomllib
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [
    "featurestore",
    "featurestore.models",
    "featurestore.services",
    "featurestore.offline",
    "featurestore.drift",
    "featurestore.client",
    "streaming",
    "serving",
    "demo",
]
PRODUCT = ["featurestore", "streaming", "serving", "demo"]
# featurestore/templates/ holds users' feature repos (`fstore init`), not modules of the product.
TEMPLATES = ROOT / "featurestore" / "templates"
MODULES = sorted(
    path.relative_to(ROOT)
    for top in PRODUCT
    for path in (ROOT / top).rglob("*.py")
    if not path.is_relative_to(TEMPLATES)
)


def _source(module: str) -> Path:
    path = ROOT / module.replace(".", "/")
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _declared_all(tree: ast.Module) -> list[str] | None:
    """The literal `__all__` of a module, None when it has none."""
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            value = ast.literal_eval(node.value)  # type: ignore[union-attr, arg-type]
            return list(value)
    return None


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Top-level statements, looking into `if` blocks (`if TYPE_CHECKING:` imports count)."""
    for node in body:
        if isinstance(node, ast.If):
            yield from _statements(node.body)
            yield from _statements(node.orelse)
        else:
            yield node


def _exported(package: str, tree: ast.Module) -> set[str]:
    """Public names a package `__init__` defines, or imports from inside the package."""
    names: set[str] = set()
    for node in _statements(tree.body):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == package or node.module.startswith(f"{package}."):
                names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return {name for name in names if not name.startswith("_") or name == "__version__"}


@pytest.mark.parametrize("package", PACKAGES)
def test_every_name_in_all_exists(package: str) -> None:
    module = importlib.import_module(package)
    assert len(set(module.__all__)) == len(module.__all__), f"{package}: __all__ repeats a name"
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{package}.__all__ names what it does not export: {missing}"


@pytest.mark.parametrize("package", PACKAGES)
def test_all_lists_everything_the_package_exports(package: str) -> None:
    module = importlib.import_module(package)
    tree = ast.parse(_source(package).read_text())
    submodules = {
        name
        for name in _exported(package, tree)
        if getattr(getattr(module, name, None), "__name__", None) == f"{package}.{name}"
    }
    unlisted = sorted(_exported(package, tree) - submodules - set(module.__all__))
    assert not unlisted, f"{package} exports names its __all__ does not list: {unlisted}"


@pytest.mark.parametrize("path", MODULES, ids=str)
def test_every_module_declares_its_public_names(path: Path) -> None:
    """The acceptance check of issue 17: every module of the product says what it offers."""
    declared = _declared_all(ast.parse((ROOT / path).read_text()))
    assert declared is not None, f"{path} has no __all__"
    module = importlib.import_module(".".join(path.with_suffix("").parts).removesuffix(".__init__"))
    missing = [name for name in declared if not hasattr(module, name)]
    assert not missing, f"{path}: __all__ names what the module lacks: {missing}"


def test_the_installed_commands_are_the_declared_ones() -> None:
    """`fstore` finds its command packages through the installed metadata: a stale install
    (pyproject.toml changed since `pip install -e`) silently loses commands."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    installed = {e.name: e.value for e in entry_points(group="fstore.commands")}
    assert installed == declared["fstore.commands"], "reinstall: pip install -e '.[dev]'"
