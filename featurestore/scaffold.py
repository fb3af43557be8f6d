"""`fstore init`: a new feature repo from a template shipped inside the package.

A template is a folder under `featurestore/templates/`: its `.py` files are the definitions,
copied as they are (so the folder itself is a repo `fstore apply` and `fstore demo` load); its
other files (`featurestore.yaml`, `README.md`) name the new repo through `${name}` and
`${namespace}`.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from string import Template

from featurestore.errors import InitError

__all__ = ["TEMPLATES", "init_repo", "template_dir"]

_ROOT = Path(__file__).resolve().parent / "templates"
TEMPLATES = ("minimal", "fraud")  # minimal: one entity, source, view, service; fraud: the demo's
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def template_dir(template: str) -> Path:
    """The folder of a shipped template (the fraud one is the demo's feature repo).

    >>> template_dir("fraud").joinpath("features.py").is_file()
    True
    """
    if template not in TEMPLATES:
        raise InitError(f"no template {template!r}: choose one of {', '.join(TEMPLATES)}")
    return _ROOT / template


def init_repo(path: Path, template: str = "minimal") -> list[Path]:
    """Write a new feature repo at `path` (a new or empty folder); return the files written.

    Its Redis namespace is the folder's name, so two repos on one Redis never share keys.
    """
    source = template_dir(template)
    path = path.expanduser()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InitError(f"{path} already exists and is not empty: choose a new folder name")
    name = path.resolve().name
    namespace = _UNSAFE.sub("-", name).strip("-.") or "fs"
    path.mkdir(parents=True, exist_ok=True)
    written = []
    for file in sorted(source.iterdir()):
        if not file.is_file():
            continue  # __pycache__ of an imported template
        target = path / file.name
        if file.suffix == ".py":
            shutil.copyfile(file, target)
        else:
            text = Template(file.read_text()).safe_substitute(name=name, namespace=namespace)
            target.write_text(text)
        written.append(target)
    return written
