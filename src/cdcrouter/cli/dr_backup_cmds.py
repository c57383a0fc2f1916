"""``cdcrouter dr backup`` and ``dr restore``: thin bodies over :mod:`cdcrouter.dr.backup` and
:mod:`cdcrouter.dr.restore`, on the shared ``dr`` group."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cdcrouter.cli.dr_cmds import dr_group

ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", envvar="CDCROUTER_CONFIG", help="Connections file (default cdcrouter.yaml).",
                 show_default=False),
]  # fmt: skip
StateDir = Annotated[
    Path | None,
    typer.Option("--state-dir", envvar="CDCROUTER_STATE_DIR", help="Deploy state (default .cdcrouter).",
                 show_default=False),
]  # fmt: skip


def _state_dir(state_dir: Path | None) -> Path:
    from cdcrouter.config.connections import DEFAULT_STATE_DIR

    return Path(state_dir or DEFAULT_STATE_DIR)


def register(app: typer.Typer) -> None:
    """Add ``backup`` and ``restore`` to the ``dr`` group."""
    group = dr_group()

    @group.command("backup")
    def backup(
        out: Annotated[Path, typer.Option("--out", help="A new directory, or a FILE.tar.gz.")],
        pipeline: Annotated[
            Path, typer.Option("--pipeline", help="pipeline.yaml (its topics, slot).")
        ] = Path("pipeline.yaml"),
        filters: Annotated[Path | None, typer.Option("--filters", help="filters.yaml (its topics).")] = None,
        group_: Annotated[
            list[str] | None,
            typer.Option(
                "--group",
                help="Only these consumer groups (default: every group with offsets on "
                "the pipeline's topics).",
            ),
        ] = None,
        no_backup_slot: Annotated[
            bool,
            typer.Option(
                "--no-backup-slot",
                help="Do not copy the slot to <slot>_bk (it holds WAL from the "
                "backup on; without it a restore cannot resend the changes after the backup).",
            ),
        ] = False,
        flink_rest: Annotated[
            str | None,
            typer.Option(
                "--flink-rest",
                help="Flink JobManager REST URL: take a savepoint of each running "
                "cdcrouter job (default: record the deploy state only).",
            ),
        ] = None,
        config: ConfigFile = None,
        state_dir: StateDir = None,
    ) -> None:
        """Back up what Kafka and PostgreSQL do not hold: files, capture position, offsets, schemas, Flink."""
        from cdcrouter.config import load_connections
        from cdcrouter.dr.backup import take_backup

        conns = load_connections(config, state_dir)
        take_backup(
            conns, pipeline, filters, out, state_dir=_state_dir(state_dir), groups=group_,
            backup_slot=not no_backup_slot, flink_rest=flink_rest, say=typer.echo,
        )  # fmt: skip

    @group.command("restore")
    def restore(
        source: Annotated[Path, typer.Argument(help="The backup: its directory or .tar.gz.")],
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Check and print the steps only.")] = False,
        accept_gap: Annotated[
            bool,
            typer.Option(
                "--accept-gap",
                help="Go on when the slot cannot resend every change after the "
                "backup (those changes are then missing; the output names the window).",
            ),
        ] = False,
        files_dir: Annotated[
            Path | None, typer.Option("--files-dir", help="Write the backed-up pipeline/filters files here.")
        ] = None,
        config: ConfigFile = None,
        state_dir: StateDir = None,
    ) -> None:
        """Restore into an empty Kafka and registry: capture and consumers resume, history is not replayed."""
        from cdcrouter.config import load_connections
        from cdcrouter.dr.restore import restore as do_restore

        conns = load_connections(config, state_dir)
        do_restore(
            conns, source, dry_run=dry_run, accept_gap=accept_gap, files_dir=files_dir,
            state_dir=_state_dir(state_dir), say=typer.echo,
        )  # fmt: skip
        if dry_run:
            typer.echo("dry run: nothing was changed")
        else:
            typer.echo("restored: start capture (`cdcrouter capture run`), the routers and the consumers")
