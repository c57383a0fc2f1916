"""``cdcrouter bench match`` on a user's own filters and events, and the realistic synthetic set.

The matches it reports are held against the independent oracle (tests/route/oracle.py), so the
benchmark is known to run the user's rules over the user's events, indexed or not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdcrouter.bench.match import realistic_events, realistic_filters
from cdcrouter.cli.main import main
from route.oracle import Oracle  # tests/route: the oracle independent of the compiler


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["bench", "match", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_own_filters_and_events_are_measured(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = realistic_filters(40, seed=3)
    events = realistic_events(300, 40, seed=5)
    (tmp_path / "filters.yaml").write_text(text)
    (tmp_path / "events.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n")
    oracle = Oracle(text)
    expected = sum(len(oracle.matching_ids(e)) for e in events) / len(events)
    args = ["--filters", str(tmp_path / "filters.yaml"), "--events", str(tmp_path / "events.jsonl")]
    for index in ("--index", "--no-index"):
        doc = _run([*args, "--count", "600", index], capsys)
        assert doc["filters"] == 40 and doc["events"] == 600
        assert doc["events_from"] == str(tmp_path / "events.jsonl")
        assert doc["matches_per_event"] == round(expected, 2) > 0
        assert ("eventHeader.eventName" in doc["index"]) == (index == "--index")


def test_realistic_set_matches_few_filters_per_event(capsys: pytest.CaptureFixture[str]) -> None:
    """At 1,000 filters most events match 1-3 of them, and the index dispatches most filters."""
    doc = _run(["-n", "1000", "--events", "3000"], capsys)
    _, few, more = doc["events_matching_0_1to3_over3"]
    assert few >= 0.5 and more <= 0.35, doc
    assert doc["index"].startswith("eventHeader.eventName: 8"), doc["index"]  # 800-899 of 1,000


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--filters", "no-such.yaml"], 1, "no-such.yaml"),
        (["--events", "no-such.jsonl"], 1, "cannot read no-such.jsonl"),
        (["--set", "huge"], 2, "expected one of realistic, operators"),
    ],
)
def test_bad_input_is_a_clear_error(
    args: list[str], code: int, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "match", *args]) == code
    out, err = capsys.readouterr()
    assert says in out + err and "Traceback" not in out + err


def test_a_bad_event_line_names_the_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"eventHeader": {"eventName": "A"}}\n{"eventHeader": {"eventName": 5}}\n')
    assert main(["bench", "match", "--events", str(path)]) == 1
    assert f"{path}:2" in "".join(capsys.readouterr())
