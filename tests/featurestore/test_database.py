"""The registries' database layer on both backends, a SQLite file and a real PostgreSQL server:
the same tables from the same migrations, upgrades, refusals, and no password in any message."""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from featurestore.config import RegistrySettings, Settings, url_without_password
from featurestore.database import Database, Migration, Schema
from featurestore.errors import RegistryError
from featurestore.models.database import SCHEMA as MODELS_SCHEMA
from featurestore.registry import SCHEMA as REGISTRY_SCHEMA

KEYS_V1 = Migration(
    sqlite=["CREATE TABLE keys (id TEXT PRIMARY KEY, scope TEXT NOT NULL)"],
    postgresql=["CREATE TABLE keys (id TEXT PRIMARY KEY, scope TEXT NOT NULL)"],
)
KEYS_V2 = Migration(
    sqlite=["ALTER TABLE keys ADD COLUMN uses INTEGER NOT NULL DEFAULT 0"],
    postgresql=["ALTER TABLE keys ADD COLUMN uses INTEGER NOT NULL DEFAULT 0"],
)


def target(tmp_path: Path, url: str | None, name: str = "keys.db") -> str | Path:
    return url if url is not None else tmp_path / name


def columns(db: Database, table: str) -> list[str]:
    if db.backend == "sqlite":
        with db.connect() as conn:
            return [row["name"] for row in conn.execute(f"PRAGMA table_info({table})")]
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
            "AND table_schema = current_schema() ORDER BY ordinal_position",
            (table,),
        )
        return [row["column_name"] for row in rows]


def test_both_backends_hold_the_same_tables_and_columns(
    tmp_path: Path, postgres_database: str
) -> None:
    for schema, tables in (
        (REGISTRY_SCHEMA, ["feature_views", "feature_services", "entities", "sources"]),
        (MODELS_SCHEMA, ["versions", "aliases", "traffic", "audit", "generation"]),
    ):
        lite = Database(tmp_path / f"{schema.name}.db", schema)
        server = Database(postgres_database, schema)
        assert server.backend == "postgresql" and lite.backend == "sqlite"
        for table in tables:
            assert columns(lite, table) == columns(server, table) != []


def test_a_new_migration_upgrades_an_existing_database(
    tmp_path: Path, registry_url: str | None
) -> None:
    first = Database(target(tmp_path, registry_url), Schema("api keys", [KEYS_V1]))
    with first.transaction() as conn:
        conn.execute("INSERT INTO keys (id, scope) VALUES (?, ?)", ("k1", "read"))

    second = Database(target(tmp_path, registry_url), Schema("api keys", [KEYS_V1, KEYS_V2]))
    with second.transaction() as conn:
        conn.execute("UPDATE keys SET uses = uses + 1 WHERE id = :id", {"id": "k1"})
    with second.connect() as conn:
        row = conn.execute("SELECT id, scope, uses FROM keys WHERE scope LIKE 'r%'").one()
    assert (row["id"], row["scope"], row[2]) == ("k1", "read", 1)
    # Reopening at the current version changes nothing; an older fstore refuses the newer schema.
    Database(target(tmp_path, registry_url), Schema("api keys", [KEYS_V1, KEYS_V2]))
    with pytest.raises(RegistryError, match="schema version 2, newer than this fstore reads"):
        Database(target(tmp_path, registry_url), Schema("api keys", [KEYS_V1]))


def test_schemas_keep_their_own_versions_in_one_postgres_database(postgres_database: str) -> None:
    other = Migration(
        sqlite=["CREATE TABLE other (x INTEGER)"], postgresql=["CREATE TABLE other (x INTEGER)"]
    )
    registry_url = postgres_database  # a SQLite file holds one schema (its user_version)
    Database(registry_url, Schema("api keys", [KEYS_V1, KEYS_V2]))
    Database(registry_url, Schema("other", [other]))
    with Database(registry_url, Schema("other", [other])).connect() as conn:
        versions = dict(conn.execute("SELECT name, version FROM fstore_schema").fetchall())
    assert versions == {"api keys": 2, "other": 1}


def test_a_failed_transaction_leaves_nothing(tmp_path: Path, registry_url: str | None) -> None:
    db = Database(target(tmp_path, registry_url), Schema("api keys", [KEYS_V1]))
    with pytest.raises(RegistryError), db.transaction() as conn:
        conn.execute("INSERT INTO keys (id, scope) VALUES (?, ?)", ("k1", "read"))
        conn.execute("INSERT INTO keys (id, scope) VALUES (?, ?)", ("k1", "again"))
    with db.connect() as conn:
        assert conn.execute("SELECT COUNT(*) FROM keys").one()[0] == 0


def with_password(url: str, password: str, in_query: bool) -> str:
    parts = urlsplit(url)
    if in_query:
        query = "&".join(q for q in (parts.query, f"password={quote(password)}") if q)
        netloc = parts.netloc.replace(f":{parts.password}@", "@")
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    netloc = parts.netloc.replace(f":{parts.password}@", f":{quote(password)}@")
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.mark.parametrize("in_query", [False, True])
def test_a_wrong_password_is_reported_without_it(postgres: str, in_query: bool) -> None:
    password = "Sw0rdfish-not-it"  # noqa: S105 - a wrong one, on purpose
    url = with_password(postgres, password, in_query)
    with pytest.raises(RegistryError) as caught:
        Database(url, Schema("api keys", [KEYS_V1]))
    message = str(caught.value)
    assert "cannot reach the api keys database" in message
    assert "password authentication failed" in message
    assert password not in message and "***" in message
    assert caught.value.__cause__ is None and password not in repr(caught.value.__context__)


def test_an_unreachable_server_is_named_without_the_password(tmp_path: Path) -> None:
    url = "postgresql://fstore:hunter2@127.0.0.1:1/fstore"
    with pytest.raises(RegistryError, match=r"fstore:\*\*\*@127.0.0.1:1") as caught:
        Database(url, REGISTRY_SCHEMA)
    assert "hunter2" not in str(caught.value)


def test_urls_are_shown_without_passwords() -> None:
    assert url_without_password("postgresql://u:pw@h/db?sslmode=require") == (
        "postgresql://u:***@h/db?sslmode=require"
    )
    assert url_without_password("postgresql://u@h/db?password=pw&sslpassword=x&a=1") == (
        "postgresql://u@h/db?password=***&sslpassword=***&a=1"
    )
    assert url_without_password("postgresql://h/db?sslmode=require") == (
        "postgresql://h/db?sslmode=require"
    )


def test_settings_take_a_postgres_url_for_both_registries(tmp_path: Path) -> None:
    url = "postgresql://u:pw@db:5432/fstore"
    settings = Settings(registry={"url": url})
    assert settings.models.url == url
    assert settings.registry.shown_url == "postgresql://u:***@db:5432/fstore"
    assert Settings(registry={"url": url}, models={"url": url + "2"}).models.url == url + "2"
    assert Settings().models.url is None
    with pytest.raises(ValueError, match="must be a postgresql:// URL") as caught:
        RegistrySettings(url="mysql://u:secretpw@db/x")
    assert "secretpw" not in str(caught.value).split("input_value")[0]


def test_connections_the_server_closed_are_replaced(postgres_database: str, postgres: str) -> None:
    """Idle connections are kept between calls; when the server ends them (a restart, an idle
    timeout, an operator), the next call opens a new one instead of failing."""
    import psycopg

    db = Database(postgres_database, Schema("api keys", [KEYS_V1]))
    with db.connect() as conn:
        kept = conn.execute("SELECT pg_backend_pid()").one()[0]
    with db.connect() as conn:
        assert conn.execute("SELECT pg_backend_pid()").one()[0] == kept  # reused
    with psycopg.connect(postgres, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", (kept,))  # waits for it
    with db.transaction() as conn:
        conn.execute("INSERT INTO keys (id, scope) VALUES (?, ?)", ("k1", "read"))
        assert conn.execute("SELECT pg_backend_pid()").one()[0] != kept
    with db.connect() as conn:
        assert conn.execute("SELECT COUNT(*) FROM keys").one()[0] == 1


def test_processes_opening_a_new_database_at_once_create_it_once(
    tmp_path: Path, registry_url: str | None
) -> None:
    """Eight registries started at once on an empty database: one creates the schema, the
    others wait for it and find it made (no "already exists", no half-made tables)."""
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def open_both() -> None:
        barrier.wait()
        try:
            Database(target(tmp_path, registry_url, "models.db"), MODELS_SCHEMA)
        except BaseException as exc:  # collected: a thread's exception would be lost
            errors.append(exc)

    threads = [threading.Thread(target=open_both) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with Database(target(tmp_path, registry_url, "models.db"), MODELS_SCHEMA).connect() as conn:
        assert conn.execute("SELECT COUNT(*) FROM generation").one()[0] == 1


def test_fstore_config_shows_the_database_url_without_its_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from featurestore import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FSTORE_CONFIG", raising=False)
    monkeypatch.setenv("FSTORE_REGISTRY_URL", "postgresql://fstore:hunter2@db:5432/fstore")
    result = CliRunner().invoke(cli.app, ["config"])
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    assert result.output.count("postgresql://fstore:***@db:5432/fstore") == 2  # registry, models
