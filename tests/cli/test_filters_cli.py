"""``cdcrouter validate|generate|explain|test`` and ``bench generate`` through the real entry point."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cdcrouter.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "filters.yaml"
RULES = ROOT / "examples" / "rules-tests.yaml"
BAD = """\
filters:
  - id: f1
    consumerId: c1
    outputTopic: 'bad topic'
    conditions:
      - field: eventHeader.eventNme
        operator: equals
        value: X
"""


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["validate", str(EXAMPLE)], capsys)
    assert code == 0 and out.strip().endswith(": valid")


def test_validate_errors_human_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "filters.yaml"
    bad.write_text(BAD)
    code, out, _ = run(["validate", str(bad)], capsys)
    assert code == 1
    assert f"{bad}:4:18 V013 [f1] illegal Kafka topic name 'bad topic'" in out
    assert f"{bad}:6:16 V001 [f1] unknown field 'eventHeader.eventNme'" in out
    assert "hint: did you mean 'eventHeader.eventName'?" in out
    code, out, _ = run(["validate", str(bad), "--format", "json"], capsys)
    doc = json.loads(out)
    assert code == 1 and doc["valid"] is False
    assert [(e["line"], e["column"], e["filterId"]) for e in doc["errors"]] == [(4, 18, "f1"), (6, 16, "f1")]
    assert set(doc["errors"][0]) >= {"file", "line", "column", "filterId", "message", "hint"}


def test_validate_yaml_syntax_error_has_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "f.yaml"
    bad.write_text("filters:\n  - id: [x\n")
    code, out, err = run(["validate", str(bad), "--format", "json"], capsys)
    assert code == 1 and json.loads(out)["errors"][0]["line"] == 3 and "Traceback" not in out + err


def test_validate_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["validate", str(tmp_path / "missing.yaml")], capsys)
    assert code == 2 and "filters file not found" in err and "hint:" in err
    code, _, _ = run(["validate", str(EXAMPLE), "--format", "xml"], capsys)
    assert code == 2


def test_generate_to_stdout_both_targets(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["generate", "--filters", str(EXAMPLE)], capsys)
    assert code == 0 and "EXECUTE STATEMENT SET" in out and "'connector' = 'kafka'" in out
    code, out, _ = run(["generate", "--target", "confluent-cloud", "--filters", str(EXAMPLE)], capsys)
    assert code == 0 and "'connector'" not in out and "FROM `raw-business-events`" in out


def test_generate_sink_shape_option(capsys: pytest.CaptureFixture[str]) -> None:
    """--sink-shape one-sink: one INSERT over a UNION ALL; a shape Confluent Cloud cannot take is a
    clear error with a hint, not a traceback."""
    assert main(["generate", "-f", str(EXAMPLE), "--sink-shape", "one-sink"]) == 0
    out = capsys.readouterr().out
    assert out.count("INSERT INTO") == 1 and "UNION ALL" in out and "EXECUTE STATEMENT SET" not in out
    assert main(["generate", "-f", str(EXAMPLE), "-t", "confluent-cloud", "--sink-shape", "one-sink"]) == 1
    captured = capsys.readouterr()
    assert "Apache Flink only" in captured.err and "hint:" in captured.err
    assert "Traceback" not in captured.err + captured.out


def test_generate_check_detects_stale_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    filters = tmp_path / "filters.yaml"
    shutil.copy(EXAMPLE, filters)
    out_dir = tmp_path / "sql"
    args = ["generate", "--filters", str(filters), "--out", str(out_dir)]
    assert run([*args, "--check"], capsys)[0] == 1  # missing
    assert run(args, capsys)[0] == 0
    assert (out_dir / "routing.flink.sql").is_file()
    assert run([*args, "--check"], capsys)[0] == 0
    filters.write_text(filters.read_text().replace("value: 100000", "value: 200000"))
    code, _, err = run([*args, "--check"], capsys)
    assert code == 1 and "stale" in err


def test_generate_refuses_invalid_filters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "filters.yaml"
    bad.write_text(BAD)
    code, out, err = run(["generate", "--filters", str(bad)], capsys)
    assert code == 1 and "V001" in err and out == ""


def test_explain_json_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = tmp_path / "events.jsonl"
    loan = {
        "eventHeader": {"eventName": "LoanCreated"},
        "eventBody": {"entities": [{"entityType": "Loan", "entityId": "L", "updatedAttributes": {}}]},
    }
    other = {"eventHeader": {"eventName": "Nothing"}}
    events.write_text(json.dumps(loan) + "\n" + json.dumps(other) + "\n")
    code, out, _ = run(["explain", str(events), "--filters", str(EXAMPLE), "--format", "json"], capsys)
    lines = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and [x["matched"] for x in lines] == [["loan-events-filter"], []]
    loan_filter = lines[0]["filters"][0]
    assert loan_filter["result"] == "TRUE"
    first = loan_filter["conditions"][0]
    assert (first["seen"], first["truth"], first["line"]) == ("LoanCreated", "TRUE", 14)
    amount = loan_filter["conditions"][2]
    assert (amount["seen"], amount["truth"]) == (None, "NULL")


def test_explain_human_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ev = tmp_path / "e.json"
    ev.write_text(json.dumps({"eventHeader": {"eventName": "ServiceBooked"}}, indent=2))
    code, out, _ = run(["explain", str(ev), "--filters", str(EXAMPLE)], capsys)
    assert code == 0 and "service-events-filter" in out and "NULL" in out


def test_explain_rejects_a_malformed_event(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ev = tmp_path / "e.json"
    ev.write_text(json.dumps({"eventBody": {"entities": [{"updatedAttributes": {"a": 5}}]}}))
    code, _, err = run(["explain", str(ev), "--filters", str(EXAMPLE)], capsys)
    assert code == 1 and "attribute values are strings" in err and "Traceback" not in err


def test_rule_tests_pass_on_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["test", str(RULES)], capsys)
    assert code == 0 and out.strip().splitlines()[-1] == "10 passed, 0 failed"


def test_rule_tests_report_failures_with_a_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(EXAMPLE, tmp_path / "filters.yaml")
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "filters: filters.yaml\ncases:\n"
        "  - name: wrong expectation\n"
        "    event: {eventHeader: {eventName: LoanCreated}, eventBody: {entities: [{entityType: Loan}]}}\n"
        "    expect: [filtered-car-events]\n"
        "  - name: right expectation\n"
        "    event: {eventHeader: {eventName: Nope}}\n"
        "    expect: []\n"
    )
    code, out, _ = run(["test", str(rules)], capsys)
    assert code == 1
    assert "FAIL wrong expectation" in out and "PASS right expectation" in out
    assert "- expected, not routed: filtered-car-events" in out
    assert "+ routed, not expected: filtered-loan-events" in out
    assert out.strip().splitlines()[-1] == "1 passed, 1 failed"


def test_bench_generate_runs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["bench", "generate", "--filters-count", "20", "--repeat", "1", "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["filters"] == 20 and doc["sql_bytes"] > 0


def test_committed_example_sql_is_up_to_date(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """examples/flink-jobs/*.sql come from examples/filters.yaml; regenerate with `cdcrouter
    generate [--target confluent-cloud] --filters examples/filters.yaml --out examples/flink-jobs`."""
    monkeypatch.chdir(ROOT)
    for target in ("flink", "confluent-cloud"):
        args = [
            "generate",
            "--target",
            target,
            "--filters",
            "examples/filters.yaml",
            "--out",
            "examples/flink-jobs",
        ]
        code, _, err = run([*args, "--check"], capsys)
        assert code == 0, err
