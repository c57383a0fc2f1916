"""What is installed: cdcrouter, its native codec build and the libraries it talks through.

A bug report needs these together (a debug build of the codec, an old librdkafka or libpq change
behaviour), so ``cdcrouter version`` gathers them; only the version in pyproject.toml is written
by hand, the rest is read from the installed distributions and the loaded native libraries.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

DISTRIBUTION = "cdcrouter"
# Distributions reported by name (PyFlink only when the [flink] extra is installed).
LIBRARIES = ("confluent-kafka", "fastavro", "psycopg", "psycopg2-binary", "pydantic", "apache-flink")


def package_version() -> str:
    """The installed cdcrouter version (pyproject's), or ``0+unknown`` when run from an uninstalled tree."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def native_build() -> dict[str, Any]:
    """The Rust codec's build (crate, version, profile, target) and the file it was loaded from."""
    from cdcrouter import _native

    return {**_native.build_info(), "path": _native.__file__}


def library_versions() -> dict[str, str | None]:
    """Each library's distribution version (None: not installed), with the C libraries underneath."""
    found: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    import confluent_kafka
    import psycopg
    import psycopg2

    found["librdkafka"] = confluent_kafka.libversion()[0]
    found["libpq"] = _libpq_text(psycopg.pq.version())
    # capture's replication connection is psycopg2's, whose wheel bundles a libpq of its own
    found["libpq-psycopg2"] = _libpq_text(psycopg2.__libpq_version__)
    return found


def report() -> dict[str, Any]:
    """Everything ``cdcrouter version --format json`` prints."""
    return {"cdcrouter": package_version(), "native": native_build(), "libraries": library_versions()}


def _libpq_text(number: int) -> str:
    """libpq's integer version (150004, or 90624 before 10) as text."""
    if number >= 100000:
        return f"{number // 10000}.{number % 10000}"
    return f"{number // 10000}.{number // 100 % 100}.{number % 100}"
