"""``cdcrouter bench <subject>``: every benchmark behind one group; the old spellings still run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdcrouter.cli.main import main

SUBJECTS = ("capture", "route", "flink", "match", "generate", "snapshot", "stack")


def test_bench_help_lists_every_subject(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    for subject in SUBJECTS:
        assert f" {subject} " in out, f"`bench {subject}` missing from:\n{out}"


@pytest.mark.parametrize("group", ["capture", "route", "stack"])
def test_old_spellings_are_hidden_from_help(group: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([group, "--help"]) == 0
    assert " bench " not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--filters-count", "4,5001"], "between 1 and 5000"),
        (["--lanes", "1,x"], "expected numbers like"),
    ],
)
@pytest.mark.parametrize("spelling", [["bench", "route"], ["route", "bench"]])
def test_route_bench_lists_are_checked_before_any_connection(
    spelling: list[str], args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*spelling, "--skip-throughput", *args])
    out, err = capsys.readouterr()
    assert code == 2 and says in out + err
    deprecated = "`cdcrouter route bench` is deprecated; use `cdcrouter bench route`"
    assert (deprecated in err) == (spelling == ["route", "bench"])


def test_old_stack_spelling_runs_the_same_command(capsys: pytest.CaptureFixture[str]) -> None:
    """The alias keeps the options: an unknown one is a usage error, not a missing command."""
    assert main(["stack", "bench", "--no-such-option"]) == 2
    assert "No such option: --no-such-option" in "".join(capsys.readouterr())


def test_repeat_reports_each_run_with_its_load_and_peak_rss(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "match", "-n", "5", "--events", "2000", "--repeat", "3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["runs"] == 3 and doc["filters"] == 5 and len(doc["each_run"]) == 3
    rates = sorted(r["events_per_s_cpu"] for r in doc["each_run"])
    figure = doc["events_per_s_cpu"]
    if isinstance(figure, dict):  # else every run measured the same rate
        assert figure == {"median": rates[1], "min": rates[0], "max": rates[2]}
    for run in doc["each_run"]:
        assert run["load_1m"] >= 0 and run["peak_rss_mb"] > 0


def test_report_tabulates_saved_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = {
        "runs": 3,
        "filters": 20,
        "events_per_s": {"median": 1500, "min": 1200, "max": 1800},
        "peak_rss_mb": 81.5,
        "load_1m": {"median": 2.5, "min": 1.0, "max": 3.0},
        "each_run": [],
    }
    (tmp_path / "match-20.json").write_text(json.dumps(result))
    (tmp_path / "route.json").write_text(json.dumps([{"p99_ms": 40.0, "lanes": 2}]))
    assert main(["bench", "report", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| result | figure | median | min | max | runs |"
    assert "| match-20 | events_per_s | 1,500 | 1,200 | 1,800 | 3 |" in lines
    assert "| match-20 | peak_rss_mb | 81.5 | 81.5 | 81.5 | 3 |" in lines
    assert "| match-20 | load_1m | 2.5 | 1 | 3 | 3 |" in lines
    assert "| route | p99_ms | 40 | 40 | 40 | 1 |" in lines
    assert not [line for line in lines if "| filters |" in line or "| lanes |" in line]  # settings


def test_report_of_a_directory_without_results_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "report", str(tmp_path)]) == 2
    assert "no *.json benchmark results" in capsys.readouterr().err
