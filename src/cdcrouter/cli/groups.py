"""Command groups: one way to hang ``cdcrouter <group> <command>`` off a parent."""

from __future__ import annotations

import typer


def subgroup(parent: typer.Typer, name: str, help: str) -> typer.Typer:
    """A new group ``NAME`` under ``parent`` that prints its help when called without a command."""
    group = typer.Typer(help=help, no_args_is_help=True)
    parent.add_typer(group, name=name)
    return group
