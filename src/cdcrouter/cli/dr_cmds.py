"""``cdcrouter dr``: disaster recovery across Kafka regions. Other modules add subcommands with
:func:`dr_group` (the group is created once, here; register their module in ``cli/main.py``)."""

from __future__ import annotations

import typer

_GROUP: typer.Typer | None = None


def dr_group() -> typer.Typer:
    """The shared ``dr`` typer group (other command modules add their commands to it)."""
    global _GROUP
    if _GROUP is None:
        _GROUP = typer.Typer(
            help="Disaster recovery: the second Kafka region (MirrorMaker 2), failover, backups, drills.",
            no_args_is_help=True,
        )
    return _GROUP


def register(app: typer.Typer) -> None:
    """Add the ``dr`` group to ``app`` (its commands come from this and other modules)."""
    app.add_typer(dr_group(), name="dr")
