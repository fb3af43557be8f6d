"""Request bodies: what is accepted, and what each rejection says."""

from __future__ import annotations

import math

import pytest

from serving.errors import BadRequest, TooLarge
from serving.inputs import parse_features, parse_predict


def test_predict_body_with_scalars_and_request_features() -> None:
    parsed = parse_predict(
        b'{"entities": {"user_id": "u1"}, "request_features": {"x": 2.5}, "return_features": true}',
        max_batch=10,
    )
    assert parsed.entities == {"user_id": ["u1"]}
    assert parsed.rows == 1
    assert parsed.request_features["x"].tolist() == [2.5]
    assert parsed.return_features is True


def test_null_request_feature_is_missing() -> None:
    parsed = parse_predict(
        b'{"entities": {"user_id": ["a", "b"]}, "request_features": {"x": [1, null]}}', 10
    )
    first, second = parsed.request_features["x"].tolist()
    assert first == 1.0 and math.isnan(second)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "body is empty"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"entities": {"user_id": ["a"]}, "entitys": 1}', "unknown fields ['entitys']"),
        (b'{"entities": {}}', "non-empty object"),
        (b'{"entities": ["a"]}', "non-empty object"),
        (b'{"entities": {"user_id": []}}', "no rows"),
        (b'{"entities": {"user_id": ["a", 1.5]}}', "entities['user_id'][1] is a number"),
        (b'{"entities": {"user_id": [true]}}', "is a boolean"),
        (b'{"entities": {"user_id": [null]}}', "is null"),
        (b'{"entities": {"user_id": ["a", "b"], "card": [1]}}', "differ in length"),
        (
            b'{"entities": {"user_id": ["a", "b"]}, "request_features": {"x": [1]}}',
            "has 1 values for 2 rows",
        ),
        (
            b'{"entities": {"user_id": ["a"]}, "request_features": {"x": ["high"]}}',
            "request_features['x'][0] is a string",
        ),
        (b'{"entities": {"user_id": ["a"]}, "request_features": [1]}', "must be an object"),
        (b'{"entities": {"user_id": ["a"]}, "return_features": "yes"}', "true or false"),
    ],
)
def test_bad_predict_bodies_say_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=None) as caught:
        parse_predict(body, max_batch=10)
    assert message in str(caught.value)


def test_too_many_rows() -> None:
    with pytest.raises(TooLarge, match="at most 3 .*serving.max_batch"):
        parse_predict(b'{"entities": {"user_id": ["a", "b", "c", "d"]}}', max_batch=3)


def test_features_body() -> None:
    parsed = parse_features(b'{"feature_service": "fraud", "entities": {"user_id": "u"}}', 5)
    assert (parsed.features, parsed.service, parsed.entities) == (None, "fraud", {"user_id": ["u"]})
    with pytest.raises(BadRequest, match="either"):
        parse_features(b'{"entities": {"user_id": "u"}}', 5)
    with pytest.raises(BadRequest, match="non-empty list"):
        parse_features(b'{"features": [], "entities": {"user_id": "u"}}', 5)
