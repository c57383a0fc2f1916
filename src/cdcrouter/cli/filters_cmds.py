"""Filter-language commands: ``validate``, ``generate``, ``explain``, ``test``.

Bodies stay thin and import lazily; the work lives in ``cdcrouter.filters`` and
``cdcrouter.backends``. Exit codes: 0 ok, 1 problems found (or stale output), 2 usage.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer

from cdcrouter.errors import UsageError


class Format(StrEnum):
    human = "human"
    json = "json"


class Target(StrEnum):
    flink = "flink"
    confluent_cloud = "confluent-cloud"


DEFAULT_FILTERS = Path("filters.yaml")
FiltersOpt = typer.Option(
    DEFAULT_FILTERS, "--filters", "-f", help="filters.yaml to use", envvar="CDCROUTER_FILTERS"
)
FormatOpt = typer.Option(Format.human, "--format", help="human or json (for CI)")

OUT_NAMES = {"flink": "routing.flink.sql", "confluent-cloud": "routing.confluent-cloud.sql"}


def _exists(path: Path, what: str) -> None:
    if not path.is_file():
        raise UsageError(f"{what} not found: {path}", hint=f"pass the path of an existing {what}")


def validate_cmd(file: Path | None, fmt: Format) -> int:
    from cdcrouter.filters import validate_file

    path = file or DEFAULT_FILTERS
    _exists(path, "filters file")
    diags = validate_file(path)
    if fmt is Format.json:
        errors = [
            {k: d.to_dict()[k] for k in ("file", "line", "column", "code", "filterId", "message", "hint")}
            for d in diags
        ]
        typer.echo(json.dumps({"valid": not diags, "errors": errors}, indent=2))
    else:
        for d in diags:
            typer.echo(d.render(), err=False)
        if diags:
            typer.echo(f"{path}: {len(diags)} problem{'s' if len(diags) != 1 else ''}")
        else:
            typer.echo(f"{path}: valid")
    return 1 if diags else 0


def generate_cmd(
    filters: Path, target: Target, out: Path | None, check: bool, sink_shape: str = "per-topic"
) -> int:
    from cdcrouter.backends.flink_sql import generate_sql
    from cdcrouter.filters import load_filters

    _exists(filters, "filters file")
    sql = generate_sql(
        load_filters(filters), target.value, source_name=filters.as_posix(), sink_shape=sink_shape
    )
    if out is None:
        if check:
            raise UsageError("--check needs --out DIR (the directory with the committed SQL)")
        typer.echo(sql, nl=False)
        return 0
    dest = out / OUT_NAMES[target.value]
    if check:
        current = dest.read_text("utf-8") if dest.is_file() else None
        if current != sql:
            why = "missing" if current is None else "stale"
            typer.echo(
                f"{dest}: {why}; run `cdcrouter generate --target {target.value} --out {out}`", err=True
            )
            return 1
        typer.echo(f"{dest}: up to date")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    dest.write_text(sql, "utf-8")
    typer.echo(f"wrote {dest}")
    return 0


def explain_cmd(event_file: Path, filters: Path, fmt: Format) -> int:
    from cdcrouter.backends.events import read_events
    from cdcrouter.backends.explain import Explainer
    from cdcrouter.filters import load_filters

    _exists(event_file, "event file")
    _exists(filters, "filters file")
    explainer = Explainer(load_filters(filters))
    for n, event in enumerate(read_events(event_file), 1):
        result = explainer.explain(event)
        if fmt is Format.json:
            typer.echo(json.dumps(result, separators=(",", ":"), ensure_ascii=False))
        else:
            _print_explain(result, f"{event_file} event {n}")
    return 0


def _print_explain(result: dict, title: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    style = {"TRUE": "green", "FALSE": "red", "NULL": "yellow", "DISABLED": "dim"}
    table = Table(title=escape(f"{title}: matched {', '.join(result['matched']) or 'nothing'}"))
    table.add_column("filter / condition")
    table.add_column("line", justify="right")
    table.add_column("value seen")
    table.add_column("truth")
    for f in result["filters"]:
        r = f["result"]
        table.add_row(
            f"[bold]{escape(f['id'])}[/] -> {escape(f['outputTopic'])}", "", "", f"[{style[r]}]{r}[/]"
        )
        for c in f["conditions"]:
            t = c["truth"]
            seen = json.dumps(c["seen"], ensure_ascii=False)
            table.add_row(f"  {escape(c['condition'])}", str(c["line"]), escape(seen), f"[{style[t]}]{t}[/]")
    Console().print(table)


def test_cmd(file: Path, filters: Path | None, fmt: Format) -> int:
    from cdcrouter.backends.ruletests import run_rule_tests

    _exists(file, "rule-test file")
    run = run_rule_tests(file, filters)
    if fmt is Format.json:
        typer.echo(
            json.dumps(
                {
                    "passed": run.passed,
                    "failed": run.failed,
                    "cases": [
                        {
                            "name": c.name,
                            "line": c.line,
                            "passed": c.passed,
                            "expected": c.expected,
                            "actual": c.actual,
                        }
                        for c in run.cases
                    ],
                },
                indent=2,
            )
        )
    else:
        for c in run.cases:
            typer.echo(f"{'PASS' if c.passed else 'FAIL'} {c.name} ({run.file}:{c.line})")
            if not c.passed:
                for line in c.diff():
                    typer.echo(f"    {line}")
                typer.echo(f"    matched filters: {', '.join(c.matched_filters) or 'none'}")
        typer.echo(f"{run.passed} passed, {run.failed} failed")
    return 1 if run.failed else 0


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""

    @app.command("validate")
    def validate(
        file: Path = typer.Argument(None, help="filters.yaml (default: ./filters.yaml)"),
        fmt: Format = FormatOpt,
    ) -> None:
        """Check a filters file: every problem with file:line:column, filter id and a hint."""
        raise typer.Exit(validate_cmd(file, fmt))

    @app.command("generate")
    def generate(
        target: Target = typer.Option(Target.flink, "--target", "-t", help="flink or confluent-cloud"),
        filters: Path = FiltersOpt,
        out: Path = typer.Option(None, "--out", "-o", help="write routing.<target>.sql into this directory"),
        check: bool = typer.Option(False, "--check", help="exit 1 if the SQL in --out is stale"),
        sink_shape: str = typer.Option(
            "per-topic", "--sink-shape", help="per-topic, or one-sink (Apache Flink; see docs/deploy.md)"
        ),
    ) -> None:
        """Compile filters to Flink SQL (one statement set reading the raw topic once)."""
        raise typer.Exit(generate_cmd(filters, target, out, check, sink_shape))

    @app.command("explain")
    def explain(
        event_file: Path = typer.Argument(..., help="one JSON event, a JSON list, or JSON lines"),
        filters: Path = FiltersOpt,
        fmt: Format = FormatOpt,
    ) -> None:
        """Show which filters match an event and, per condition, the value seen and its truth."""
        raise typer.Exit(explain_cmd(event_file, filters, fmt))

    @app.command("test")
    def test(
        file: Path = typer.Argument(Path("rules-tests.yaml"), help="rule-test file"),
        filters: Path = typer.Option(None, "--filters", "-f", help="override the file's filters:"),
        fmt: Format = FormatOpt,
    ) -> None:
        """Run rule tests: events and the topics each must reach; exit 1 on any failure."""
        raise typer.Exit(test_cmd(file, filters, fmt))
