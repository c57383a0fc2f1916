"""``cdcrouter consume`` and ``cdcrouter dlq`` through the real CLI entry point."""

from __future__ import annotations

import json

import pytest

from cdcrouter.cli.main import main
from cdcrouter.consumer import ConsumerApp

from .conftest import event, produce_raw

pytestmark = pytest.mark.integration


def test_consume_prints_decoded_events_as_json_and_table(conns, topic, produce, capsys) -> None:
    src = topic(partitions=2)
    uuids = produce(
        src, [event("LoanCreated", f"L-{i}", {"loan.loanAmount": f"{i}000.50"}) for i in range(3)]
    )
    produce_raw(conns, src, b"garbage", key=b"L-x")
    assert main(["consume", src, "--from-beginning", "--max", "4", "--format", "json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert sorted(x["event"]["eventHeader"]["uuid"] for x in lines if "event" in x) == sorted(uuids)
    assert [x["key"] for x in lines if "error" in x] == ["L-x"]
    assert {x["topic"] for x in lines} == {src}

    assert main(["consume", src, "--from-beginning", "--max", "4"]) == 0
    out = capsys.readouterr().out
    assert out.count("LoanCreated") == 3 and "loan.loanAmount=2000.50" in out and "undecodable" in out

    # No group, no commits: the default read leaves no consumer group behind, and --timeout stops.
    assert main(["consume", src, "--timeout", "1"]) == 0


def test_consume_usage_and_missing_topic_errors(conns, capsys) -> None:
    assert main(["consume", "x", "--format", "yaml"]) == 2
    assert main(["consume", "x", "--commit"]) == 2
    assert main(["consume", "no-such-topic-4d1f", "--max", "1"]) == 1
    err = capsys.readouterr().err
    assert "topic no-such-topic-4d1f does not exist" in err and "Traceback" not in err


def test_dlq_list_and_replay_commands(conns, topic, produce, capsys) -> None:
    src = topic(partitions=1)
    produce(src, [event("LoanCreated", "L-bad")])
    app = ConsumerApp("cli-dlq", conns, group=f"{src}-g", retries=0)

    @app.on(src)
    def fail(ev):
        raise KeyError("loan.loanAmount")

    app.run(timeout=30, max_messages=1)
    dlq = app.dlq_topic(src)
    assert main(["dlq", "list", "--format", "json"]) == 0
    counts = {d["topic"]: d["records"] for d in json.loads(capsys.readouterr().out)}
    assert counts[dlq] == 1
    assert main(["dlq", "list", dlq]) == 0
    out = capsys.readouterr().out
    assert "KeyError" in out and "handler" in out
    assert main(["dlq", "replay", dlq]) == 0
    assert f"replayed 1 record(s) ({src}: 1)" in capsys.readouterr().out
    assert main(["dlq", "replay", dlq]) == 0
    assert "replayed 0 record(s) (-); skipped 1" in capsys.readouterr().out
    assert main(["consume", src, "--from-beginning", "--max", "2", "--format", "json"]) == 0
    replayed = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["offset"] for r in replayed] == [0, 1]
    assert replayed[0]["event"] == replayed[1]["event"]
