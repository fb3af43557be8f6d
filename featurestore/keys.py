"""Entity keys: the one string that names an entity in the online store, the traffic split and
the prediction log.

An entity is the tuple of its join-key values. Its key is each value as text with `\\` and `|`
escaped by a backslash, joined by `|`, so distinct tuples never share a key — `("a|b", "c")` and
`("a", "b|c")` included — and a value without either character reads as itself.

>>> entity_key(["u1"])
'u1'
>>> entity_key(["a|b", "c"]), entity_key(["a", "b|c"])
('a\\\\|b|c', 'a|b\\\\|c')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["entity_key", "entity_keys"]

_SEPARATOR = "|"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


def entity_key(values: Sequence[Any]) -> str:
    """The key of one entity, given its join-key values in the view's join-key order."""
    return _SEPARATOR.join(_escape(str(value)) for value in values)


def entity_keys(columns: Mapping[str, Sequence[Any]], join_keys: Sequence[str]) -> list[str]:
    """The key of each row of `columns` (join key -> values), as `entity_key` makes it.

    >>> entity_keys({"user": ["u1", "u2"], "card": [7, 8]}, ["user", "card"])
    ['u1|7', 'u2|8']
    """
    if len(join_keys) == 1:
        return [_escape(str(value)) for value in columns[join_keys[0]]]
    parts = [columns[key] for key in join_keys]
    return [
        _SEPARATOR.join(_escape(str(value)) for value in row) for row in zip(*parts, strict=True)
    ]
