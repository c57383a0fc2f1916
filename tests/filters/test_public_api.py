"""The public API other packages use is pinned here; changing it is a deliberate act."""

from __future__ import annotations

import cdcrouter.filters
from cdcrouter.backends import flink_sql, python_eval


def test_filters_exports() -> None:
    assert sorted(cdcrouter.filters.__all__) == [
        "Diagnostic",
        "FilterError",
        "Span",
        "load_filters",
        "load_filters_text",
        "validate_file",
        "validate_text",
    ]


def test_back_end_entry_points_exist() -> None:
    for name in (
        "generate_sql",
        "where_clause",
        "raw_table_ddl",
        "sink_table_ddl",
        "insert_sql",
        "render_placeholders",
    ):
        assert callable(getattr(flink_sql, name))
    assert callable(python_eval.compile_filterset)
