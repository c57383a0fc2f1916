"""SQL script splitting, gateway error messages, and the real SQL Gateway's error path."""

from __future__ import annotations

import pytest

from cdcrouter.deploy.plan import Plan, Script
from cdcrouter.deploy.sql_gateway import SqlGateway, server_message, split_statements
from cdcrouter.errors import DeployError

SCRIPT = """-- routing for consumer x; not a statement
SET 'pipeline.name' = 'it''s';
CREATE TABLE `raw` (a STRING) WITH ('connector' = 'kafka', 'topic' = 'x;y'); /* a ; comment */
CREATE TABLE out1 (a STRING) WITH ('connector' = 'blackhole');
EXECUTE STATEMENT SET
BEGIN
  INSERT INTO out1 SELECT a FROM `raw` /*+ OPTIONS('k'='v') */ WHERE a <> 'END;';
  INSERT INTO out1 SELECT a FROM `raw` WHERE a = "x;";
END;
"""


def test_split_keeps_statement_sets_quotes_and_hints_whole() -> None:
    parts = split_statements(SCRIPT)
    assert len(parts) == 4
    assert parts[0] == "SET 'pipeline.name' = 'it''s'"
    assert parts[1].endswith("'topic' = 'x;y')")
    assert parts[3].startswith("EXECUTE STATEMENT SET") and parts[3].endswith("END")
    assert "/*+ OPTIONS('k'='v') */" in parts[3] and "a ; comment" not in "".join(parts)


def test_script_parts() -> None:
    script = Script.parse(SCRIPT)
    assert script.sets == [("pipeline.name", "it's")]
    assert script.tables == ["raw", "out1"] and script.sources == ["raw"] and script.sinks == ["out1"]
    assert (
        script.digest() == Script.parse(SCRIPT).digest() != Script.parse(SCRIPT.replace("x;y", "z")).digest()
    )
    with pytest.raises(DeployError, match="expected exactly one"):
        Script.parse("CREATE TABLE a (x INT) WITH ()")


def test_plan_render_has_no_placeholder_values() -> None:
    script = Script.parse(SCRIPT.replace("'x;y'", "'${RAW_TOPIC}'"))
    plan = Plan("flink", "routing", script.digest())
    assert "routing" in plan.render() and "nothing to do" in plan.render()


def test_server_message_picks_the_root_cause() -> None:
    body = {
        "errors": [
            "Internal server error.",
            "<Exception on server side:\norg.x.SqlGatewayException: Failed to fetchResults.\n"
            "\tat a.b(C.java:1)\n"
            "Caused by: org.apache.flink.table.api.ValidationException: Object 'nope' not found\n"
            "\tat x.y(Z.java:2)"
            "\n\nEnd of exception on server side>",
        ]
    }
    assert server_message(body) == "Object 'nope' not found (ValidationException)"


@pytest.mark.integration
@pytest.mark.flink
def test_real_gateway_error_is_clean(stack_with) -> None:
    stack = stack_with("flink")
    gateway = SqlGateway(stack.sql_gateway_url)
    with gateway.open_session() as session:
        assert session.run("SELECT 1 + 1").rows == [[2]]
        with pytest.raises(DeployError) as err:
            session.run("INSERT INTO no_such_table SELECT 1")
    text = err.value.render()
    assert "no_such_table" in text and "ValidationException" in text and "\tat " not in text
    gateway.close()


def test_gateway_timeout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from cdcrouter.deploy.sql_gateway import TIMEOUT_ENV, default_timeout_s

    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert default_timeout_s() == 120.0
    monkeypatch.setenv(TIMEOUT_ENV, "300")
    assert default_timeout_s() == 300.0
    for bad in ("soon", "0", "-5"):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        with pytest.raises(DeployError) as err:
            default_timeout_s()
        assert TIMEOUT_ENV in err.value.message and "300" in (err.value.hint or "")


@pytest.mark.integration
@pytest.mark.flink
def test_real_gateway_honours_the_configured_timeout(stack_with, monkeypatch: pytest.MonkeyPatch) -> None:
    """A statement that runs a job has no result for the first moments: with the timeout set to
    1 ms the first NOT_READY page ends the wait with a message naming the setting (0.2 s let a warm
    cluster finish the job between two polls); with the default it returns the rows."""
    from cdcrouter.deploy.sql_gateway import TIMEOUT_ENV

    stack = stack_with("flink")
    gateway = SqlGateway(stack.sql_gateway_url)
    query = "SELECT COUNT(*) FROM (VALUES (1), (2), (3)) AS t(x)"
    try:
        with gateway.open_session({"execution.runtime-mode": "batch"}) as session:
            monkeypatch.setenv(TIMEOUT_ENV, "0.001")
            with pytest.raises(DeployError) as err:
                session.run(query)
            assert "within 0.001s" in err.value.message and TIMEOUT_ENV in (err.value.hint or "")
            monkeypatch.delenv(TIMEOUT_ENV)
            assert session.run(query).rows == [[3]]
    finally:
        gateway.close()
