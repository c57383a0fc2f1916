"""Rule tests for filter repositories: events and the exact set of topics each must reach.

File format (YAML)::

    filters: filters.yaml          # relative to this file
    cases:
      - name: big loan goes to the loan team
        event: {eventHeader: {eventName: LoanCreated}, ...}   # or eventFile: events/x.json
        expect: [filtered-loan-events]                        # [] = routed nowhere

Events may be partial (see ``cdcrouter.backends.events``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from cdcrouter.backends.events import EventError, normalize_event, read_events
from cdcrouter.backends.python_eval import compile_filterset
from cdcrouter.errors import CdcrouterError
from cdcrouter.filters import load_filters


class RuleTestError(CdcrouterError):
    """The rule-test file itself is malformed."""


@dataclass(frozen=True)
class CaseResult:
    name: str
    line: int
    passed: bool
    expected: list[str]
    actual: list[str]
    matched_filters: list[str] = field(default_factory=list)

    def diff(self) -> list[str]:
        exp, act = set(self.expected), set(self.actual)
        lines = [f"- expected, not routed: {t}" for t in sorted(exp - act)]
        lines += [f"+ routed, not expected: {t}" for t in sorted(act - exp)]
        if len(self.actual) != len(act):
            lines.append(f"! routed more than once: {self.actual}")
        return lines


@dataclass(frozen=True)
class RunResult:
    file: str
    cases: list[CaseResult]

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.cases)

    @property
    def failed(self) -> int:
        return len(self.cases) - self.passed


def run_rule_tests(path: str | Path, filters: str | Path | None = None) -> RunResult:
    """Run every case in the rule-test file ``path``.

    Args:
        path: the rule-test YAML.
        filters: filters file to test (default: the file's ``filters:`` key, relative to it).

    Raises:
        RuleTestError: the test file is malformed; FilterError: the filters file is invalid.
    """
    p = Path(path)
    try:
        doc = YAML(typ="rt").load(p.read_text("utf-8"))
    except OSError as exc:
        raise RuleTestError(f"cannot read {p}: {exc.strerror}", hint="check the path") from exc
    except MarkedYAMLError as exc:
        m = exc.problem_mark
        where = f"{p}:{m.line + 1}:{m.column + 1}" if m else str(p)
        raise RuleTestError(f"{where}: YAML syntax error: {exc.problem}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list):
        raise RuleTestError(
            f"{p}: expected a mapping with a 'cases:' list", hint="see docs/filter-language.md"
        )
    fpath = Path(filters) if filters else None
    if fpath is None:
        if not isinstance(doc.get("filters"), str):
            raise RuleTestError(f"{p}: name the filters file with `filters: <path>`")
        fpath = p.parent / doc["filters"]
    compiled = compile_filterset(load_filters(fpath))
    topic_of = {f.id: f.output_topic for f in compiled.filters}
    results = []
    for i, case in enumerate(doc["cases"]):
        line = case.lc.line + 1 if hasattr(case, "lc") else 0
        where = f"{p}:{line}"
        if not isinstance(case, dict):
            raise RuleTestError(f"{where}: a case must be a mapping with name, event and expect")
        name = str(case.get("name", f"case {i + 1}"))
        expect = case.get("expect")
        if not isinstance(expect, list) or not all(isinstance(t, str) for t in expect):
            raise RuleTestError(f"{where}: case '{name}' needs `expect: [topic, ...]` ([] for none)")
        events = _case_events(case, p, where)
        for n, ev in enumerate(events):
            ids = compiled.match(ev)
            actual = [topic_of[i] for i in ids]
            label = name if len(events) == 1 else f"{name} [event {n + 1}]"
            ok = sorted(actual) == sorted(set(expect)) and len(actual) == len(set(actual))
            results.append(CaseResult(label, line, ok, sorted(set(expect)), sorted(actual), ids))
    return RunResult(str(p), results)


def _case_events(case: dict[str, Any], p: Path, where: str) -> list[dict[str, Any]]:
    try:
        if "event" in case:
            return [normalize_event(_plain(case["event"]), where)]
        if "eventFile" in case:
            return read_events(p.parent / str(case["eventFile"]))
    except EventError as exc:
        raise RuleTestError(exc.message, hint=exc.hint) from exc
    raise RuleTestError(f"{where}: a case needs `event:` or `eventFile:`")


def _plain(v: Any) -> Any:
    """ruamel containers -> plain dict/list/str/int (attribute values stay as written)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    return str(v)
