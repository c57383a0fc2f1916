"""Differential test: the embedded engine and real Flink agree on every filter and every event.

Random filters (all eleven operators, four valueTypes, AND/OR, per-condition logicalOperator,
any/all/not/anyEntity groups, ``entities[*]``, out-of-range indexes, missing map keys, regexes
from the portable subset, quotes and backslashes) run over random seed-shaped events through
``cdcrouter.backends.python_eval`` and through a bounded PyFlink batch job that evaluates each
filter's ``where_clause`` over a JSON-lines file with the raw event's row type.

* ``test_bulk_agreement``: a seeded bulk run (>= 300 filters x >= 2,000 events) for CI.
* ``test_hypothesis_agreement``: small hypothesis examples that shrink to a minimal case.
* ``test_bulk_agreement_large``: ``--runslow`` only, ten times larger.

A disagreement is reported with the filter's YAML, the event's JSON and both answers; commit the
minimal case to ``test_regressions.py`` and fix it in the IR or a back end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import time
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cdcrouter.filters import load_filters_text, validate_text
from cdcrouter.ir.nodes import AnyEntity, FilterSet, Node

from .gen import TS_LITERALS, TS_TEXTS, Draw, HypoDraw, RandomDraw, filters_yaml, gen_event, gen_filter

SEED = int(os.environ.get("CDCROUTER_DIFF_SEED", "20261124"))


def raw_columns() -> str:
    """The column list of the generated source DDL, so Flink sees the exact row type we deploy."""
    from cdcrouter.backends.flink_sql import raw_table_ddl

    ddl = raw_table_ddl("flink")
    m = re.search(r"\(\n(.*)\n\)\s*WITH", ddl, re.DOTALL)
    assert m, f"cannot find the column list in:\n{ddl}"
    return m.group(1)


def valid_filters(d: Draw, count: int, *, max_tries: int | None = None) -> list[dict[str, Any]]:
    """``count`` random filters that pass validation (invalid draws, e.g. min > max, are dropped)."""
    out: list[dict[str, Any]] = []
    tries = 0
    while len(out) < count:
        tries += 1
        if max_tries is not None and tries > max_tries:
            break
        f = gen_filter(d, len(out))
        if not validate_text(filters_yaml([f])):
            out.append(f)
    return out


def with_entity_limit(node: Node, limit: int) -> Node:
    """``node`` with every ``entities[*]`` test unrolled over ``limit`` entities instead.

    Flink's planner time grows fast with expression size, and the default unroll makes each
    ``entities[*]`` ten copies. Both back ends get the same rewritten IR, and the events carry up
    to five entities, so the bound itself (entities past it are ignored) is still exercised.
    """
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(node):
        v = getattr(node, f.name)
        if isinstance(v, Node):
            changes[f.name] = with_entity_limit(v, limit)
        elif isinstance(v, tuple) and v and all(isinstance(x, Node) for x in v):
            changes[f.name] = tuple(with_entity_limit(x, limit) for x in v)
    if isinstance(node, AnyEntity):
        changes["limit"] = limit
    return dataclasses.replace(node, **changes) if changes else node


def compare(
    checker: Any,
    filters: Sequence[dict[str, Any]],
    events: Sequence[dict[str, Any]],
    *,
    entity_limit: int | None = None,
) -> list[str]:
    """Run both back ends; return a readable report per disagreement (empty when they agree)."""
    from cdcrouter.backends.flink_sql import where_clause
    from cdcrouter.backends.python_eval import compile_filterset

    text = filters_yaml(filters)
    fs = load_filters_text(text, "random.yaml")
    if entity_limit is not None:
        rewritten = with_entity_limit(fs, entity_limit)
        assert isinstance(rewritten, FilterSet)
        fs = rewritten
    engine = compile_filterset(fs)
    py = [set(engine.match(ev)) for ev in events]
    preds = {f.id: where_clause(f) for f in fs.enabled()}
    fl = checker.match_sets(preds, events, columns=raw_columns())
    by_id = {f["id"]: f for f in filters}
    problems: list[str] = []
    for ev, p, q in zip(events, py, fl, strict=True):
        for fid in sorted(p ^ q):
            problems.append(
                f"filter {fid}: python={'match' if fid in p else 'no match'}, "
                f"flink={'match' if fid in q else 'no match'}\n"
                f"  filter: {json.dumps(by_id[fid], ensure_ascii=False)}\n"
                f"  where:  {preds[fid]}\n"
                f"  event:  {json.dumps(ev, ensure_ascii=False)}"
            )
    return problems


def _bulk(checker: Any, n_filters: int, n_events: int, seed: int) -> None:
    d = RandomDraw(random.Random(seed))
    filters = valid_filters(d, n_filters)
    events = [gen_event(d, i) for i in range(n_events)]
    t0 = time.perf_counter()
    problems = compare(checker, filters, events, entity_limit=3)
    elapsed = time.perf_counter() - t0
    print(f"differential: {n_filters} filters x {n_events} events, seed {seed}: {elapsed:.1f}s")
    assert not problems, f"{len(problems)} disagreements (seed {seed}); first ones:\n" + "\n".join(
        problems[:8]
    )


def test_bulk_agreement(flink_checker: Any) -> None:
    _bulk(flink_checker, 320, 2000, SEED)


@pytest.mark.slow
def test_bulk_agreement_large(flink_checker: Any) -> None:
    _bulk(flink_checker, 1500, 20000, SEED + 1)


def _ts_filter(n: int, op: str, **values: Any) -> dict[str, Any]:
    cond = {"field": "eventBody.entities[0].updatedAttributes.ts", "operator": op, "valueType": "timestamp"}
    return {"id": f"ts{n}", "consumerId": "c", "outputTopic": f"t-ts{n}", "conditions": [{**cond, **values}]}


def test_timestamp_filters_over_iso_text(flink_checker: Any) -> None:
    """Every ISO-8601 text (capture's form, offsets, fraction lengths, near misses) against every
    timestamp literal and operator: both back ends agree, and they do read ISO text as an instant
    (not NULL everywhere, not string order)."""
    # every expression here is a large CASE: Flink's code generation time grows with their number
    filters = [_ts_filter(n, "greaterThan", value=lit) for n, lit in enumerate(TS_LITERALS)]
    filters.append(_ts_filter(len(filters), "equals", value="2023-11-14T22:13:20Z"))
    filters.append(_ts_filter(len(filters), "between", min="2023-11-14T22:13:20.5Z", max=1700000005000))
    filters.append(_ts_filter(len(filters), "in", values=["2023-11-14T22:13:20Z", 1700000005000]))
    events = [
        {**gen_event(RandomDraw(random.Random(i)), i), "eventBody": {"entities": [ent]}}
        for i, ent in enumerate(
            {"entityType": "Loan", "entityId": f"L{i}", "updatedAttributes": {"ts": text}}
            for i, text in enumerate([*TS_TEXTS, None])
        )
    ]
    problems = compare(flink_checker, filters, events)
    assert not problems, f"{len(problems)} disagreements; first ones:\n" + "\n".join(problems[:6])

    from cdcrouter.backends.python_eval import compile_filterset

    engine = compile_filterset(load_filters_text(filters_yaml(filters), "ts.yaml"))
    by_text = {e["eventBody"]["entities"][0]["updatedAttributes"]["ts"]: set(engine.match(e)) for e in events}
    gt_20s = f"ts{TS_LITERALS.index('2023-11-14T22:13:20Z')}"  # greaterThan 1700000000000
    # "...20.5Z" sorts before "...20Z" as text, but is half a second later
    assert gt_20s in by_text["2023-11-14T22:13:20.5Z"]
    assert gt_20s in by_text["2023-11-14T18:13:25.25-04:00"]
    assert gt_20s not in by_text["2023-11-15T03:43:20+05:30"]  # the same instant
    assert f"ts{len(TS_LITERALS)}" in by_text["2023-11-15T03:43:20+05:30"]  # equals ...22:13:20Z
    for never in ("2023-02-29T00:00:00Z", "infinity", "2023-11-14T22:13:20", None):
        assert not by_text[never], never


def _iso_texts(rng: random.Random, n: int) -> list[str]:
    """``n`` ISO-8601 texts over years 0001-9999 (century and leap years often, month ends, any
    fraction length, offsets); some name a day that does not exist (29, 30, 31 in any month)."""
    years = [1, 4, 100, 400, 1582, 1900, 1969, 2000, 2100, 9999]
    texts = []
    for _ in range(n):
        year = rng.choice([rng.randint(1, 9999), rng.choice(years)])
        day = rng.choice([rng.randint(1, 28), rng.randint(1, 28), 29, 30, 31])
        hms = [rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)]
        text = f"{year:04d}-{rng.randint(1, 12):02d}-{day:02d}T" + ":".join(f"{v:02d}" for v in hms)
        if rng.random() < 0.6:
            text += "." + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 9)))
        offset = f"{rng.choice('+-')}{rng.randint(0, 23):02d}:{rng.choice([0, 30, 45, 59]):02d}"
        texts.append(text + ("Z" if rng.random() < 0.4 else offset))
    return texts


def test_iso_text_reads_the_exact_instant(flink_checker: Any) -> None:
    """The generated SQL reads ISO-8601 text as exactly the instant Python's ``datetime`` gives
    (the oracle: ``sqlsem.parse_iso_timestamp_ms``), to the nanosecond, over the whole range of
    years and offsets, and NULL where the day or the year 0000 does not exist. The filter tests
    above compare instants near 2023 only; a day off in 1582 or 0004 would pass them."""
    from cdcrouter.backends.flink_sql import timestamp_ms_sql
    from cdcrouter.backends.sqlsem import parse_iso_timestamp_ms

    texts = [*_iso_texts(random.Random(SEED), 400), *TS_TEXTS]
    texts += [
        "0000-03-01T00:00:00Z",
        "1900-02-29T00:00:00Z",
        "2000-02-29T12:00:00-00:30",
        "0001-01-01T00:00:00+23:59",
    ]
    want = [parse_iso_timestamp_ms(t) for t in texts]
    assert sum(v is not None for v in want) > 250, "most texts must be real instants"
    # each event carries its text and Python's reading of it: one predicate compares the two
    events = [
        {**gen_event(RandomDraw(random.Random(i)), i), "eventBody": {"entities": [ent]}}
        for i, ent in enumerate(
            {"entityType": "T", "entityId": f"T{i}", "updatedAttributes": {"ts": t, "want": w}}
            for i, (t, w) in enumerate(zip(texts, (None if w is None else str(w) for w in want), strict=True))
        )
    ]
    attrs = "`eventBody`.`entities`[1].`updatedAttributes`"
    read = timestamp_ms_sql(f"{attrs}['ts']")
    exact = f"{read} IS NOT DISTINCT FROM TRY_CAST({attrs}['want'] AS DECIMAL(38, 10))"
    hits = flink_checker.match_sets({"exact": exact}, events, columns=raw_columns())
    wrong = [(t, str(w)) for t, w, h in zip(texts, want, hits, strict=True) if "exact" not in h]
    assert not wrong, f"{len(wrong)} texts read differently from Python (text, python); first: {wrong[:6]}"


@settings(
    max_examples=int(os.environ.get("CDCROUTER_DIFF_EXAMPLES", "12")),
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
    database=None,
)
@given(data=st.data())
def test_hypothesis_agreement(flink_checker: Any, data: st.DataObject) -> None:
    d = HypoDraw(data)
    filters = valid_filters(d, 4, max_tries=12)
    assume(filters)
    events = [gen_event(d, i) for i in range(d.integer(1, 12))]
    problems = compare(flink_checker, filters, events)
    assert not problems, "\n".join(problems[:4])
