"""Timeouts users may raise through the environment (a loaded machine needs longer)."""

from __future__ import annotations

import os

from cdcrouter.errors import CdcrouterError

__all__ = ["env_seconds"]


def env_seconds(name: str, default: float, error: type[CdcrouterError]) -> float:
    """Seconds from environment variable ``name``, else ``default``.

    Raises:
        CdcrouterError: (of class ``error``) the value is not a positive number.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise error(
            f"{name}={raw!r} is not a positive number of seconds",
            hint=f"set it to e.g. 300, or unset it for the default {default:g}",
        )
    return value
