"""``cdcrouter bench <subject>``: every benchmark behind one group; the old spellings still run."""

from __future__ import annotations

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
        (["--filters-count", "4,30"], "between 1 and 20"),
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
