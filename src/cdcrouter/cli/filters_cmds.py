"""Commands for this concern are registered here (owned by its package's developer)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
