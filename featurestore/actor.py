"""Who a change is by, when the command line makes it: the local login name.

Someone at the command line holds the registries' files already, so there is no stronger
identity to take there; through the scoring API the actor is the API key's name
(serving/auth.py), never a header the client chooses.
"""

from __future__ import annotations

import getpass

__all__ = ["default_who"]


def default_who() -> str:
    """The login name ("unknown" where there is none, as in some containers)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
