"""`fstore keys`: create, list and revoke the scoring API's keys (featurestore/api_keys.py).

Who made a change is the local login name: someone at the command line already holds the
registry's files, so there is no stronger identity to take and no flag to claim another one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from featurestore.actor import default_who
from featurestore.api_keys import SCOPE_FORMS, KeyStore
from featurestore.config import load_settings
from featurestore.definitions import duration_us
from featurestore.errors import RegistryError

__all__ = ["keys_app", "parse_expiry"]

keys_app = typer.Typer(help="API keys of the scoring API: scopes, expiry, rate limits.")
console = Console()


def parse_expiry(text: str, now: datetime) -> datetime:
    """`--expires`: a duration from now ('30d', '12h') or an ISO 8601 time (UTC if no zone).

    >>> parse_expiry("1d", datetime(2026, 1, 1, tzinfo=UTC)).isoformat()
    '2026-01-02T00:00:00+00:00'
    """
    try:
        return now + timedelta(microseconds=duration_us(text))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise RegistryError(
            f"--expires {text!r} is neither a duration ('30d', '12h') nor an ISO 8601 time "
            "('2026-12-31T00:00:00Z')"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The key's name: the audit's 'who' for its calls.")],
    scope: Annotated[
        list[str], typer.Option("--scope", help=f"Repeat for each: {', '.join(SCOPE_FORMS)}.")
    ],
    expires: Annotated[
        str | None, typer.Option(help="A duration ('90d') or an ISO 8601 time; default: never.")
    ] = None,
    rate: Annotated[
        float | None, typer.Option(help="Requests per second on average (default: no limit).")
    ] = None,
    burst: Annotated[
        int | None, typer.Option(help="Requests at once above the rate (default: the rate).")
    ] = None,
) -> None:
    """Create a key and print its secret, once: only a hash of it is kept."""
    expires_at = None if expires is None else parse_expiry(expires, datetime.now(UTC))
    store = KeyStore(load_settings().registry)
    key, secret = store.create(name, scope, default_who(), expires_at, rate, burst)
    # The secret alone on stdout, so `$(fstore keys create ...)` captures just it.
    print(secret)  # noqa: T201 - the one place a secret is shown, on purpose
    Console(stderr=True).print(
        f"key {key.name!r} created with {', '.join(sorted(key.scopes))}"
        f"{'' if expires_at is None else f', expires {expires_at.isoformat()}'}: "
        "the secret above is shown only now; send it as 'Authorization: Bearer <secret>'",
        highlight=False,
    )


@keys_app.command("list")
def list_keys() -> None:
    """Every key, revoked and expired ones too (never their secrets)."""
    keys = KeyStore(load_settings().registry).keys()
    if not keys:
        console.print("No keys: `fstore keys create NAME --scope SCOPE` makes one.")
        return
    now = datetime.now(UTC)
    table = Table("name", "scopes", "state", "created (UTC)", "by", "expires (UTC)", "rate/s")
    for key in keys:
        if key.revoked_at is not None:
            state = f"[red]revoked[/] by {key.revoked_by}"
        elif key.expired(now):
            state = "[yellow]expired[/]"
        else:
            state = "[green]active[/]"
        table.add_row(
            key.name,
            " ".join(sorted(key.scopes)),
            state,
            f"{key.created_at:%Y-%m-%d %H:%M}",
            key.created_by,
            "-" if key.expires_at is None else f"{key.expires_at:%Y-%m-%d %H:%M}",
            "-" if key.rate_per_s is None else f"{key.rate_per_s:g}",
        )
    console.print(table)


@keys_app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="The key to revoke, for good.")]) -> None:
    """Revoke a key: servers refuse it within `serving.keys_refresh_s` seconds."""
    settings = load_settings()
    KeyStore(settings.registry).revoke(name, default_who())
    console.print(
        f"key {name!r} revoked; running servers refuse it within "
        f"{settings.serving.keys_refresh_s:g} s"
    )


@keys_app.command("history")
def history() -> None:
    """Every key creation and revocation, oldest first, with who did it."""
    table = Table("id", "at (UTC)", "who", "action", "key", "detail")
    for entry in KeyStore(load_settings().registry).history():
        table.add_row(
            str(entry.id),
            f"{entry.at:%Y-%m-%d %H:%M:%S}",
            entry.who,
            entry.action,
            entry.key_name,
            entry.detail,
        )
    console.print(table)
