"""Who the bridge's user is, looked up the way upstream does (contract §3: get_current_user, get_user_info)."""

from __future__ import annotations

import getpass
import os
from typing import Any

DEFAULT_USER = "test123"  # upstream's user when the OS names none


def os_user_info() -> dict[str, Any]:
    """Upstream's user context: who the user is and how that was found (there is no override)."""
    user_id = os_user()
    default = user_id == DEFAULT_USER
    return {"user_id": user_id, "is_default": default, "is_override": False,
            "authentication_method": "default" if default else "system", "is_authenticated": not default}


def os_user() -> str:
    for lookup in (os.getlogin, getpass.getuser):
        try:
            user = lookup()
        except Exception:  # no controlling terminal, or nothing names the user (OSError, KeyError from pwd)
            continue
        if user:
            return user
    return os.environ.get("USER") or os.environ.get("USERNAME") or DEFAULT_USER
