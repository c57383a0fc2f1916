"""``cdcrouter version``: the package, its native codec build and its libraries' versions."""

from __future__ import annotations

from enum import StrEnum

import orjson
import typer


class Format(StrEnum):
    human = "human"
    json = "json"


def register(app: typer.Typer) -> None:
    """Add ``version`` to ``app``."""

    @app.command("version")
    def version(
        fmt: Format = typer.Option(Format.human, "--format", help="human or json (for bug reports and CI)"),
    ) -> None:
        """Print the cdcrouter version, the native codec's build and the main libraries' versions."""
        from cdcrouter.versions import report

        info = report()
        if fmt is Format.json:
            typer.echo(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode())
            return
        native = info["native"]
        typer.echo(f"cdcrouter {info['cdcrouter']}")
        typer.echo(
            f"native codec {native['crate']} {native['version']} ({native['profile']}, "
            f"{native['os']}-{native['arch']}) {native['path']}"
        )
        for name, ver in info["libraries"].items():
            typer.echo(f"{name} {ver or 'not installed'}")
