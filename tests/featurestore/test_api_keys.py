"""API keys in the registry: only a digest kept, scopes checked, revocation and its audit, the
`fstore keys` commands, and `grants` against a brute-force reading of the scope rules."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from featurestore.api_keys import ADMIN, KeyStore, digest, grants, parse_scope
from featurestore.api_keys_cli import parse_expiry
from featurestore.config import RegistrySettings
from featurestore.errors import RegistryError


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(RegistrySettings(path=tmp_path / "registry"))


def test_only_the_digest_is_kept_and_secrets_are_random(store: KeyStore) -> None:
    key, secret = store.create("svc", ["predict:fraud", "models:read"], "alice")
    other, other_secret = store.create("svc2", ["admin"], "alice")
    assert secret.startswith("fsk_") and len(secret) > 40 and secret != other_secret
    assert key.digest == hashlib.sha256(secret.encode()).hexdigest() == digest(secret)
    raw = store.path.read_bytes()
    assert secret.encode() not in raw and secret[4:].encode() not in raw
    listed = {k.name: k for k in store.keys()}
    assert listed["svc"].scopes == frozenset({"predict:fraud", "models:read"})
    assert listed["svc"].created_by == "alice" and listed["svc"].revoked_at is None
    assert other.grants("drift:read")


def test_bad_input_is_refused_with_what_to_do(store: KeyStore) -> None:
    with pytest.raises(RegistryError, match="unknown scope 'predict'.*predict:<model>"):
        store.create("a", ["predict"], "alice")
    with pytest.raises(RegistryError, match="unknown scope 'root'"):
        store.create("a", ["root"], "alice")
    with pytest.raises(RegistryError, match="needs at least one --scope"):
        store.create("a", [], "alice")
    with pytest.raises(RegistryError, match="key name '1x' is invalid"):
        store.create("1x", ["admin"], "alice")
    with pytest.raises(RegistryError, match="already past"):
        store.create("a", ["admin"], "alice", expires_at=datetime.now(UTC) - timedelta(1))
    with pytest.raises(RegistryError, match="rate 0"):
        store.create("a", ["admin"], "alice", rate_per_s=0)
    store.create("a", ["admin"], "alice")
    with pytest.raises(RegistryError, match="exists already"):
        store.create("a", ["admin"], "bob")
    with pytest.raises(RegistryError, match="no key named 'zz' \\(keys: a\\)"):
        store.revoke("zz", "bob")


def test_revocation_is_kept_with_its_audit(store: KeyStore) -> None:
    store.create("a", ["admin"], "alice")
    revoked = store.revoke("a", "bob")
    assert revoked.revoked_by == "bob" and revoked.revoked_at is not None
    with pytest.raises(RegistryError, match="revoked already"):
        store.revoke("a", "carol")
    with pytest.raises(RegistryError, match="exists already"):  # a name is never reused
        store.create("a", ["admin"], "carol")
    assert [(e.id, e.who, e.action, e.key_name) for e in store.history()] == [
        (1, "alice", "create", "a"),
        (2, "bob", "revoke", "a"),
    ]
    assert [k.name for k in store.keys()] == ["a"]  # still listed, as revoked


def test_keys_live_in_the_registry_database_on_both_backends(
    tmp_path: Path, registry_url: str | None
) -> None:
    """Created, listed, revoked and audited alike in SQLite and PostgreSQL; the audit refuses
    rewrites on both."""
    store = KeyStore(RegistrySettings(path=tmp_path / "registry", url=registry_url))
    key, secret = store.create("svc", ["predict:*"], "alice")
    store.revoke("svc", "bob")
    [listed] = store.keys()
    assert (listed.digest, listed.revoked_by) == (digest(secret), "bob") and key.name == "svc"
    assert [(e.who, e.action) for e in store.history()] == [("alice", "create"), ("bob", "revoke")]
    with store._transaction() as conn:  # noqa: SLF001 - the table itself, past the API
        assert secret not in repr(conn.execute("SELECT * FROM api_keys").fetchall())
    with pytest.raises(RegistryError, match="append-only"), store._transaction() as conn:  # noqa: SLF001
        conn.execute("DELETE FROM key_audit")
    assert len(store.history()) == 2


def test_a_missing_file_means_no_keys_and_is_not_created(tmp_path: Path) -> None:
    store = KeyStore(RegistrySettings(path=tmp_path / "nothing"))
    assert store.keys() == [] and store.history() == []
    assert not store.path.exists()


def test_a_newer_schema_is_refused(store: KeyStore) -> None:
    store.create("a", ["admin"], "alice")
    with sqlite3.connect(store.path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(RegistryError, match="newer than this fstore reads"):
        KeyStore(RegistrySettings(path=store.path.parent)).create("b", ["admin"], "x")


def test_expiry_parsing() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_expiry("12h", now) == now + timedelta(hours=12)
    assert parse_expiry("2026-03-01", now) == datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_expiry("2026-03-01T00:00:00+02:00", now).tzinfo is UTC
    with pytest.raises(RegistryError, match="neither a duration"):
        parse_expiry("soon", now)


_KINDS = st.sampled_from(["predict", "features"])
_NAMES = st.sampled_from(["fraud", "spend", "*"])
_SCOPES = st.one_of(
    st.sampled_from(["models:read", "drift:read", "metrics:read", ADMIN]),
    st.builds(lambda kind, name: f"{kind}:{name}", _KINDS, _NAMES),
)


def _reference(scopes: frozenset[str], needed: str) -> bool:
    """The rules as the docs state them, one by one."""
    for held in scopes:
        if held == ADMIN or held == needed:
            return True
        kind, _, name = held.partition(":")
        if name == "*" and kind in ("predict", "features") and needed.startswith(f"{kind}:"):
            return True
    return False


@given(st.frozensets(_SCOPES, max_size=4), _SCOPES.filter(lambda s: not s.endswith("*")))
def test_grants_matches_the_stated_rules(scopes: frozenset[str], needed: str) -> None:
    assert all(parse_scope(s) == s for s in scopes)
    assert grants(scopes, needed) == _reference(scopes, needed)


def test_fstore_keys_commands(tmp_path: Path) -> None:
    config = tmp_path / "featurestore.yaml"
    config.write_text(yaml.safe_dump({"registry": {"path": str(tmp_path / "registry")}}))
    fstore = [str(Path(sys.executable).parent / "fstore"), "keys"]
    env = {**os.environ, "FSTORE_CONFIG": str(config), "COLUMNS": "200"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - our own command
            [*fstore, *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )

    made = run("create", "scorer", "--scope", "predict:fraud", "--expires", "30d", "--rate", "5")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("fsk_") and "\n" not in secret
    assert "shown only now" in made.stderr and secret not in made.stderr
    listed = run("list")
    assert "scorer" in listed.stdout and "predict:fraud" in listed.stdout
    assert secret not in listed.stdout
    bad = run("create", "x", "--scope", "everything")
    assert bad.returncode == 1 and "unknown scope 'everything'" in bad.stderr
    assert run("revoke", "scorer").returncode == 0
    assert "revoked" in run("list").stdout
    history = run("history").stdout
    assert "create" in history and "revoke" in history
    store = KeyStore(RegistrySettings(path=tmp_path / "registry"))
    assert store.keys()[0].digest == digest(secret)
