"""Golden files: each tests/fixtures/filters/<name>.yaml compiles to exactly its committed
.flink.sql, .cc.sql, .ir.json and .py. Rebuild with ``pytest tests/backends --update-goldens``;
never edit a golden by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdcrouter.backends.flink_sql import generate_sql
from cdcrouter.backends.python_eval import python_source
from cdcrouter.filters import load_filters_text
from cdcrouter.filters.resolve import OPERATORS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "filters"
CASES = sorted(FIXTURES.glob("*.yaml"))
KINDS = {
    "flink.sql": lambda fs: generate_sql(fs, "flink"),
    "cc.sql": lambda fs: generate_sql(fs, "confluent-cloud"),
    "ir.json": lambda fs: json.dumps(fs.to_dict(), indent=1, ensure_ascii=False) + "\n",
    "py": lambda fs: python_source(fs)[0],
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_golden(case: Path, kind: str, request: pytest.FixtureRequest) -> None:
    fs = load_filters_text(case.read_text("utf-8"), case.name)
    actual = KINDS[kind](fs)
    golden = case.with_suffix(f".{kind}")
    if request.config.getoption("--update-goldens"):
        golden.write_text(actual, "utf-8")
        return
    assert golden.is_file(), f"missing golden {golden.name}: run pytest tests/backends --update-goldens"
    assert actual == golden.read_text("utf-8"), f"{golden.name} differs: review, then --update-goldens"


def test_every_operator_has_a_fixture() -> None:
    used = set()
    for case in CASES:
        for line in case.read_text("utf-8").splitlines():
            if line.strip().startswith("operator:"):
                used.add(line.split(":", 1)[1].strip())
    assert set(OPERATORS) <= used


def test_generation_is_deterministic() -> None:
    text = (FIXTURES / "groups.yaml").read_text("utf-8")
    a = generate_sql(load_filters_text(text, "groups.yaml"), "flink")
    b = generate_sql(load_filters_text(text, "groups.yaml"), "flink")
    assert a == b
