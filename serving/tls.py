"""HTTPS for `fstore serve`: the certificate and key uvicorn serves with, checked before any
worker starts, so a wrong file is one clear error rather than a traceback per worker."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from featurestore.errors import ConfigError

__all__ = ["tls_options"]


def tls_options(certfile: Path | None, keyfile: Path | None) -> dict[str, Any]:
    """uvicorn's `ssl_*` arguments for a certificate (chain) and its private key; {} for plain
    HTTP when neither is given. The key may sit in the certificate file (then `keyfile` is
    None); a key without a certificate is refused.

    >>> tls_options(None, None)
    {}
    """
    if certfile is None:
        if keyfile is not None:
            raise ConfigError("--ssl-keyfile needs --ssl-certfile: the certificate it belongs to")
        return {}
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        given = f"{certfile}" + (f" and key {keyfile}" if keyfile else "")
        raise ConfigError(
            f"cannot serve HTTPS with certificate {given}: {exc}. Give a PEM certificate chain "
            "(--ssl-certfile) and its unencrypted PEM private key (--ssl-keyfile)"
        ) from None
    return {"ssl_certfile": str(certfile), "ssl_keyfile": None if keyfile is None else str(keyfile)}
