"""``cdcrouter init``: starter pipeline, filters, rule tests and connections (:mod:`cdcrouter.scaffold`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cdcrouter.errors import ConfigError, UsageError


def register(app: typer.Typer) -> None:
    """Add ``init`` to ``app``."""

    @app.command("init")
    def init(
        dsn: Annotated[
            str | None,
            typer.Argument(help="libpq DSN of the database (default: the configured connections)"),
        ] = None,
        from_postgres: Annotated[
            bool, typer.Option("--from-postgres", help="inspect an existing database's tables")
        ] = False,
        schema: Annotated[str, typer.Option("--schema", "-s", help="schema of the tables")] = "public",
        tables: Annotated[
            str | None, typer.Option("--tables", "-t", help="comma-separated tables (default: all)")
        ] = None,
        out: Annotated[Path, typer.Option("--out", "-o", help="directory to write the files into")] = Path(
            "."
        ),
        force: Annotated[bool, typer.Option("--force", help="overwrite existing files")] = False,
        config: Annotated[Path | None, typer.Option(envvar="CDCROUTER_CONFIG", help="cdcrouter.yaml")] = None,
    ) -> None:
        """Write pipeline.yaml, filters.yaml, rules-tests.yaml and cdcrouter.yaml to start from:
        from your own database's tables with --from-postgres, else from the sample domain."""
        from cdcrouter import scaffold
        from cdcrouter.config import load_connections

        if not from_postgres and (dsn or tables or schema != "public"):
            raise UsageError("a DSN, --schema and --tables need --from-postgres")
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is not a directory", hint="pass a directory (created if missing)")
        existing = scaffold.existing_files(out)
        if existing and not force:
            raise ConfigError(
                f"{', '.join(str(p) for p in existing)} already exist{'s' if len(existing) == 1 else ''}",
                hint="pass --force to overwrite them, or --out DIR to write elsewhere",
            )
        conns = load_connections(config_file=config)
        if from_postgres:
            from cdcrouter.scaffold.discover import postgres_from_dsn

            pg = postgres_from_dsn(dsn, conns.postgres) if dsn else conns.postgres
            wanted = [t.strip() for t in tables.split(",") if t.strip()] if tables else None
            sc = scaffold.from_postgres(pg, conns, schema, wanted)
        else:
            sc = scaffold.from_sample_domain(conns)
        for path in scaffold.write_files(sc, out):
            typer.echo(f"wrote {path}")
        for t in sc.tables:
            for w in t.warnings:
                typer.echo(f"warning: {sc.schema}.{t.name}: {w}", err=True)
        for name in sc.skipped:
            typer.echo(f"warning: {sc.schema}.{name}: left out (not a lower-case identifier)", err=True)
        typer.echo(
            f"{len(sc.captured)} of {len(sc.tables) + len(sc.skipped)} tables captured; next: "
            "cdcrouter validate filters.yaml && cdcrouter test rules-tests.yaml && "
            "cdcrouter capture run --pipeline pipeline.yaml"
        )
