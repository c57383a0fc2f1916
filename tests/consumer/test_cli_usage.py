"""CLI usage errors that need no broker: exit code 2, a hint, no traceback."""

from __future__ import annotations

import pytest

from cdcrouter.cli.main import main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["consume", "t", "--format", "yaml"], "--format 'yaml' is not one of table, json"),
        (["consume", "t", "--commit"], "--commit needs --group"),
        (["dlq", "list", "--format", "xml"], "is not one of table, json"),
        (["dlq", "replay", "t.c.dlq", "--app", "nocolon"], "is not MODULE:ATTRIBUTE"),
        (["dlq", "replay", "t.c.dlq", "--app", "no_such_module_x:app"], "No module named"),
        (["dlq", "replay", "t.c.dlq", "--app", "cdcrouter.errors:CdcrouterError"], "is not a ConsumerApp"),
        (["dlq", "replay", "t.c.dlq", "--app", "m:a", "--to-topic", "x"], "exclude each other"),
    ],
)
def test_usage_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "hint:" in err and "Traceback" not in err
