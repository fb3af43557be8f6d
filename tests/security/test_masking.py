"""What `fstore config` and every message show of a secret: `***`. Checked against a
brute-force reference over random secrets (hypothesis): whatever a password holds, and
wherever it sits (a URL's user part, a query parameter, a librdkafka property, a token), the
masked form holds none of it, and what is no secret is shown as it is."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from featurestore.config import (
    SECRET_SHOWN,
    RedisSettings,
    Settings,
    is_secret_name,
    masked,
    url_without_password,
)

# Secrets long enough, and from characters apart enough, that they never occur by chance in
# the rest of a URL (host, port, path, other parameters).
secrets = st.text(st.sampled_from("QWXZqwxz@:/?#&=%+ !$"), min_size=8, max_size=24).filter(
    lambda s: any(c.isalpha() for c in s)
)


@given(password=secrets, user=st.sampled_from(["", "fstore"]))
def test_a_password_in_the_user_part_never_shows(password: str, user: str) -> None:
    url = f"rediss://{quote(user)}:{quote(password, safe='')}@cache:6380/2?ssl_cert_reqs=none"
    shown = url_without_password(url)
    assert shown == f"rediss://{quote(user)}:***@cache:6380/2?ssl_cert_reqs=none"
    assert quote(password, safe="") not in shown


@given(password=secrets, name=st.sampled_from(["password", "ssl_password", "token", "Password"]))
def test_a_secret_query_parameter_never_shows(password: str, name: str) -> None:
    query = urlencode({"ssl_ca_certs": "/etc/ca a.pem", name: password, "db": "3"})
    shown = url_without_password(f"redis://cache:6379/0?{query}")
    reference = query.replace(urlencode({name: password}), f"{name}=***")
    assert shown == f"redis://cache:6379/0?{reference}"


def test_a_url_without_secrets_is_left_as_it_is() -> None:
    for url in (
        "redis://127.0.0.1:6379/0",
        "unix:///run/redis.sock?db=2",
        "rediss://user@cache:6380/0?ssl_ca_certs=%2Fetc%2Fca.pem&ssl_keyfile=/k.pem",
        "https://hooks.example.com/alert?channel=ops",
    ):
        assert url_without_password(url) == url


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("sasl.password", True),
        ("ssl.key.password", True),
        ("ssl.keystore.password", True),
        ("ssl.key.pem", True),
        ("sasl.oauthbearer.client.secret", True),
        ("sasl.oauthbearer.config", True),
        ("sasl.jaas.config", True),
        ("admin_token", True),
        ("aws_secret_access_key", True),
        ("credentials", True),
        ("sasl.username", False),
        ("ssl.key.location", False),
        ("ssl.ca.location", False),
        ("security.protocol", False),
        ("namespace", False),
        ("prediction_log_topic", False),
    ],
)
def test_which_names_hold_secrets(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def _leaves(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [str(value)]


@given(sasl=secrets, redis=secrets, admin=secrets, hook=secrets)
def test_the_settings_dump_shows_no_secret_and_every_other_value(
    sasl: str, redis: str, admin: str, hook: str
) -> None:
    settings = Settings(
        kafka={
            "bootstrap": "broker:9093",
            "properties": {"sasl.username": "app", "sasl.password": sasl},
        },
        redis=RedisSettings(url=f"redis://app:{quote(redis, safe='')}@cache:6379/0"),
        serving={"admin_token": admin, "read_token": None},
        monitor={"webhook_url": f"https://hooks.example.com/x?token={quote(hook, safe='')}"},
    )
    shown = masked(settings.model_dump(mode="json"))
    text = repr(shown)
    for secret in (sasl, redis, admin, hook, quote(redis, safe=""), quote(hook, safe="")):
        assert secret not in text
    assert shown["kafka"]["properties"] == {"sasl.username": "app", "sasl.password": SECRET_SHOWN}
    assert shown["redis"]["url"] == "redis://app:***@cache:6379/0"
    assert shown["serving"]["admin_token"] == SECRET_SHOWN
    assert shown["serving"]["read_token"] is None  # unset stays visibly unset
    assert shown["monitor"]["webhook_url"] == "https://hooks.example.com/x?token=***"
    # Everything else is shown as it is.
    plain = settings.model_dump(mode="json")
    assert shown["offline"] == plain["offline"] and shown["services"] == plain["services"]


def test_everything_under_a_secret_name_is_masked() -> None:
    assert masked({"credentials": {"user": "a", "key": "b"}, "n": 1}) == {
        "credentials": {"user": SECRET_SHOWN, "key": SECRET_SHOWN},
        "n": 1,
    }
