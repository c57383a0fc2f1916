"""Log lines of every command: text for people, JSON (one object per line) for log collectors.

One handler on the root logger writes to stderr. The format comes from the CLI's root option
``--log-format`` or ``CDCROUTER_LOG_FORMAT`` (so a container can set it); a command only picks
its level. librdkafka's own lines arrive here too: config/connections.py gives every client the
``cdcrouter.kafka`` logger, so none is printed raw. Values of secret-looking environment
variables, libpq ``password=`` pairs and URL passwords are masked in every line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cdcrouter.errors import ConfigError

LOG_FORMAT_ENV = "CDCROUTER_LOG_FORMAT"
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
KAFKA_LOGGER = "cdcrouter.kafka"  # librdkafka's lines: "<facility> [<client name>] <text>"
MASK = "***"

_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|USER_INFO|CREDENTIAL|API_KEY|PRIVATE_KEY", re.I)
_SECRET_PATTERNS = (
    re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I),  # libpq conninfo
    re.compile(r"(://[^/\s:@]+:)([^/\s@]+)(@)"),  # scheme://user:password@host
)
# attributes every LogRecord has: anything else on a record came from ``extra=``
_RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _secret_values() -> list[str]:
    """Secrets this process may know: secret-looking env vars and the local stack's secret files."""
    values = [v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 4]
    secrets_dir = Path(os.environ.get("CDCROUTER_STATE_DIR", ".cdcrouter")) / "secrets"
    if secrets_dir.is_dir():
        for f in secrets_dir.iterdir():
            try:
                value = f.read_text().strip()
            except OSError:
                continue
            if len(value) >= 4:
                values.append(value)
    return sorted(set(values), key=len, reverse=True)  # longest first: no partial masks


class Redactor:
    """Masks known secret values and password-shaped substrings in a string."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        self.secrets = _secret_values() if secrets is None else secrets

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern in _SECRET_PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + MASK + (m.group(3) if m.lastindex == 3 else ""), text)
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO-8601 UTC), level, logger, message, extras, exception."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC)
        doc: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_") and key not in doc:
                doc[key] = self.redact(value) if isinstance(value, str) else value
        if record.exc_info:
            doc["exception"] = self.redact(self.formatException(record.exc_info))
        if record.stack_info:
            doc["stack"] = self.redact(self.formatStack(record.stack_info))
        return json.dumps(doc, default=lambda v: self.redact(str(v)), ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The classic one-line format, with secrets masked."""

    def __init__(self, fmt: str, redact: Redactor) -> None:
        super().__init__(fmt)
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _ours() -> _StderrHandler | None:
    return next((h for h in logging.getLogger().handlers if isinstance(h, _StderrHandler)), None)


def check_format(fmt: str) -> str:
    fmt = fmt.strip().lower()
    if fmt not in FORMATS:
        raise ConfigError(
            f"log format {fmt!r} is not known",
            hint=f"use --log-format text or json (or {LOG_FORMAT_ENV}=text|json)",
        )
    return fmt


def current_format() -> str:
    """The format in use, else the one the environment asks for, else text."""
    handler = _ours()
    if handler is not None:
        return "json" if isinstance(handler.formatter, JsonFormatter) else "text"
    return check_format(os.environ.get(LOG_FORMAT_ENV) or "text")


def configure(fmt: str | None = None, *, level: int | None = None, text_format: str | None = None) -> None:
    """Install (or update) the one stderr handler on the root logger.

    ``fmt`` None keeps the format already chosen (the CLI's root option sets it first). ``level``
    None keeps the root level (WARNING unless a command asked for more).
    """
    fmt = check_format(fmt) if fmt else current_format()
    redact = Redactor()
    root = logging.getLogger()
    handler = _ours()
    if handler is None:
        handler = _StderrHandler()
        root.addHandler(handler)
    previous = handler.formatter
    if fmt == "json":
        handler.setFormatter(JsonFormatter(redact))
    else:
        keep = previous._fmt if isinstance(previous, TextFormatter) else None
        handler.setFormatter(TextFormatter(text_format or keep or TEXT_FORMAT, redact))
    if level is not None:
        root.setLevel(level)
    logging.captureWarnings(True)  # Python warnings become log records, not raw stderr text
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per HTTP request otherwise


@contextlib.contextmanager
def scoped() -> Iterator[None]:
    """Leave logging as it was found: ``main()`` called in-process (tests) must not keep our handler."""
    root, kafka = logging.getLogger(), logging.getLogger(KAFKA_LOGGER)
    levels, had = (root.level, kafka.level), _ours()
    try:
        yield
    finally:
        root.setLevel(levels[0])
        kafka.setLevel(levels[1])
        ours = _ours()
        if had is None and ours is not None:
            root.removeHandler(ours)
            logging.captureWarnings(False)


def configure_if_unset() -> None:
    """For library entry points (a consumer app's ``run()``): set up only if the app did not.

    The level stays the app's (Python's default: WARNING); the format follows the environment.
    """
    if not logging.getLogger().handlers:
        configure()


def progress(name: str, line: str) -> None:
    """A command's progress line: ``name: line`` on stderr as text, or a JSON INFO record.

    Shown whatever the command's log level is: progress is output, not diagnostics.
    """
    if current_format() != "json":
        print(f"{name}: {line}", file=sys.stderr, flush=True)
        return
    _emit(name, line, {})


def summary(name: str, message: str, fields: dict[str, Any]) -> None:
    """A command's closing numbers: ``fields`` as one JSON line as text, else a record carrying them."""
    if current_format() != "json":
        print(json.dumps(fields), file=sys.stderr, flush=True)
        return
    _emit(name, message, fields)


def _emit(name: str, message: str, fields: dict[str, Any]) -> None:
    """An INFO record of ``cdcrouter.<name>`` straight to the handler, past the logger's level."""
    logger = logging.getLogger(f"cdcrouter.{name}")
    record = logger.makeRecord(logger.name, logging.INFO, "(progress)", 0, message, (), None)
    for key, value in fields.items():  # a field named like a record attribute keeps a trailing _
        setattr(record, f"{key}_" if key in record.__dict__ else key, value)
    handler = _ours()
    if handler is None:
        configure()
        handler = _ours()
    assert handler is not None
    handler.handle(record)
