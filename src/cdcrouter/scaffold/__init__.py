"""``cdcrouter init``: a starter pipeline.yaml, filters.yaml, rules-tests.yaml and cdcrouter.yaml,
from an existing database's tables (inspected by the capture engine's own catalogue checks) or
from the sample domain."""

from __future__ import annotations

from cdcrouter.scaffold.discover import Scaffold, TableFacts, from_postgres, from_sample_domain
from cdcrouter.scaffold.render import FILE_NAMES, existing_files, write_files

__all__ = [
    "FILE_NAMES",
    "Scaffold",
    "TableFacts",
    "existing_files",
    "from_postgres",
    "from_sample_domain",
    "write_files",
]
