"""Minimal cases where the embedded engine and real Flink disagreed (found by the differential test).

Each test names the expected answer (what the filter language means) and checks both back ends
against it, so a fix must land in the IR or a back end, never in a special case here.
"""

from __future__ import annotations

import copy
from typing import Any

from cdcrouter.filters import load_filters_text

BASE_EVENT: dict[str, Any] = {
    "eventHeader": {
        "uuid": "u1",
        "eventName": "LoanCreated",
        "createdDate": 1700000000000,
        "savedDate": 1700000000001,
        "eventType": None,
    },
    "eventBody": {"entities": [{"entityType": "Loan", "entityId": "L1", "updatedAttributes": {}}]},
    "sourceMetadata": {"table": "loans", "operation": "INSERT", "timestamp": 1700000000000},
}


def both(checker: Any, yaml_text: str, event: dict[str, Any]) -> tuple[bool, bool]:
    """(embedded engine matches, Flink matches) for the single filter in ``yaml_text``."""
    from cdcrouter.backends.flink_sql import where_clause
    from cdcrouter.backends.python_eval import compile_filterset

    fs = load_filters_text(yaml_text, "regression.yaml")
    (f,) = fs.filters
    py = f.id in compile_filterset(fs).match(event)
    (flink,) = checker.match_sets({f.id: where_clause(f)}, [event])
    return py, f.id in flink


def one_filter(conditions: str) -> str:
    return (
        "filters:\n  - id: r1\n    consumerId: c\n    outputTopic: filtered-r1-events\n"
        f"    conditions:\n{conditions}"
    )


def test_in_list_on_long_field_with_fraction_does_not_truncate(flink_checker: Any) -> None:
    """``in`` on a BIGINT field with a fractional number must not match the truncated value.

    Found 2026-11-24 (seed 20261124): Flink coerces the literals of ``bigint_col IN (1,
    1700000000000.5)`` to BIGINT, so 1700000000000.5 becomes 1700000000000 and the event with
    timestamp 1700000000000 matched in Flink but not in the embedded engine. (``=`` with the same
    literal compares exactly; only IN/NOT IN lists are coerced.) Numbers are DECIMAL(38, 10) in
    the filter language, so the correct answer is "no match"; the same holds for ``notIn``.
    """
    cond = (
        "      - field: sourceMetadata.timestamp\n        operator: in\n"
        "        values: [1, 1700000000000.5]\n"
    )
    assert both(flink_checker, one_filter(cond), copy.deepcopy(BASE_EVENT)) == (False, False)
    cond_not = (
        "      - field: sourceMetadata.timestamp\n        operator: notIn\n"
        "        values: [2, 1700000000000.5]\n"
    )
    assert both(flink_checker, one_filter(cond_not), copy.deepcopy(BASE_EVENT)) == (True, True)


def test_flink_if_treats_unknown_as_false(flink_checker: Any) -> None:
    """The bounded runner relies on IF(NULL, a, b) = b: UNKNOWN must never count as a match."""
    rows = flink_checker.query("SELECT IF(CAST(NULL AS BOOLEAN), 'y', 'n') FROM (VALUES (1)) AS t(x)")
    assert rows == [("n",)]
