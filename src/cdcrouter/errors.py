"""Error hierarchy shared by every package.

    CdcrouterError            a user-facing failure: printed without a traceback, exit code 1
    ├── ConfigError           bad pipeline/connection configuration (file, key, hint)
    ├── StackError            a local service could not be fetched, started or reached
    ├── CaptureError          replication slot, publication or source database problems
    ├── RouteError            routing engine failures (Kafka, Avro, registry)
    ├── DeployError           Flink SQL Gateway / Confluent Cloud / Kafka Connect REST failures
    └── DrError               disaster recovery: the mirror, a region, a failover step
    UsageError                wrong command-line usage: exit code 2

Filter-language diagnostics live in ``cdcrouter.filters`` and subclass ``CdcrouterError``.
"""

from __future__ import annotations


class CdcrouterError(Exception):
    """A failure the user can act on. ``hint`` says what to do about it."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        return f"error: {self.message}" + (f"\n  hint: {self.hint}" if self.hint else "")


class UsageError(CdcrouterError):
    exit_code = 2


class ConfigError(CdcrouterError):
    pass


class StackError(CdcrouterError):
    pass


class CaptureError(CdcrouterError):
    pass


class RouteError(CdcrouterError):
    pass


class DeployError(CdcrouterError):
    pass


class DrError(CdcrouterError):
    """Disaster recovery: the mirror, a region or a failover step failed."""
