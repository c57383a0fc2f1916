"""The ``cdcrouter`` entry point.

Every command group lives in its own module and exposes ``register(app)``; this file only wires
them together and turns :class:`CdcrouterError` into a clean message and exit code (no tracebacks
for user mistakes).
"""

from __future__ import annotations

import importlib
import logging
import sys
from enum import StrEnum
from typing import Annotated

import typer

from cdcrouter.errors import CdcrouterError
from cdcrouter.observe import logs

# Modules that add commands to the app. Keep each concern in its own module.
COMMAND_MODULES = (
    "cdcrouter.cli.filters_cmds",  # validate, generate, explain, test
    "cdcrouter.cli.stack_cmds",  # stack fetch|up|down|status|logs
    "cdcrouter.cli.capture_cmds",  # capture run|status, connector render|deploy|status
    "cdcrouter.cli.route_cmds",  # topics, schemas, run, deploy, replay, demo
    "cdcrouter.cli.consumer_cmds",  # consume, dlq
    "cdcrouter.cli.demo_cmds",  # demo (the README's main job)
    "cdcrouter.cli.bench_cmds",  # bench capture|route|flink|match|generate|snapshot|stack
    "cdcrouter.cli.bench_fused_cmds",  # bench fused
    "cdcrouter.cli.deploy_cmds",  # deploy [--target], deploy status|stop|resume|delete|list
    "cdcrouter.cli.status_cmds",  # status: the whole pipeline for on-call
    "cdcrouter.cli.dashboard_cmds",  # dashboard: the status view as a live web page
    "cdcrouter.cli.init_cmds",  # init: starter pipeline/filters/tests/connections from a database
    "cdcrouter.cli.version_cmds",  # version: package, native codec build, library versions
    "cdcrouter.cli.dr_cmds",  # dr status (other dr_*_cmds modules add theirs to the group)
    "cdcrouter.cli.dr_failover_cmds",  # dr drill, dr failover|failback, dr start|stop|ps
    "cdcrouter.cli.dr_pg_cmds",  # dr standby up|status|promote|down (database failover)
    "cdcrouter.cli.dr_backup_cmds",  # dr backup, dr restore
)


class LogFormat(StrEnum):
    text = "text"
    json = "json"


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="cdcrouter",
        help="Stream PostgreSQL changes to Kafka as business events and route them by YAML rules.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )

    @app.callback()
    def _root(
        log_format: Annotated[
            LogFormat,
            typer.Option(
                "--log-format",
                envvar=logs.LOG_FORMAT_ENV,
                case_sensitive=False,
                help="Log lines on stderr: text, or json (one object per line, for log collectors).",
            ),
        ] = LogFormat.text,
    ) -> None:
        """Stream PostgreSQL changes to Kafka as business events and route them by YAML rules."""
        logs.configure(log_format.value)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)

    return app


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (0 ok, 1 user error, 2 usage error)."""
    app = build_app()
    with logs.scoped():
        try:
            app(args=argv, prog_name="cdcrouter")  # standalone: usage errors exit 2 with a message
        except CdcrouterError as exc:
            if logs.current_format() == "json":  # a log collector gets the failure as one more record
                logs.configure()  # (already done unless the error came before the root option)
                logging.getLogger("cdcrouter").error(exc.message, extra={"hint": exc.hint})
            else:
                typer.echo(exc.render(), err=True)
            return exc.exit_code
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
