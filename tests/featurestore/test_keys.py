"""Entity keys: one encoding, unambiguous for any strings."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from featurestore.keys import entity_key, entity_keys

# Few characters, the separator and the escape among them, so collisions would be found.
_text = st.text(alphabet="ab|\\", max_size=6)
_entities = st.lists(_text, min_size=1, max_size=3)


@given(_entities, _entities)
def test_distinct_entities_never_share_a_key(a: list[str], b: list[str]) -> None:
    assert (entity_key(a) == entity_key(b)) == (a == b)


@given(st.integers(1, 3).flatmap(lambda n: st.lists(st.lists(_text, min_size=n, max_size=n))))
def test_the_column_form_keys_each_row_as_entity_key(rows: list[list[str]]) -> None:
    names = [f"k{i}" for i in range(len(rows[0]))] if rows else ["k0"]
    columns = {name: [row[i] for row in rows] for i, name in enumerate(names)}
    assert entity_keys(columns, names) == [entity_key(row) for row in rows]


def test_the_issues_example_keys_differ() -> None:
    assert entity_key(["a|b", "c"]) != entity_key(["a", "b|c"])
    assert entity_key(["plain"]) == "plain"  # keys without | or \ are as they were
