"""Retries, the dead-letter topic and its replay, on the real broker and registry."""

from __future__ import annotations

from collections import Counter

import pytest

from cdcrouter.consumer import ConsumerApp, ConsumerError, HandlerFailed
from cdcrouter.consumer._replay import list_dlqs, read_dlq, replay

from .conftest import ensure_topic, event, produce_raw

pytestmark = pytest.mark.integration


def test_failing_handler_is_retried_then_dead_lettered_and_replay_reaches_it(conns, topic, produce) -> None:
    src = topic(partitions=2)
    uuids = produce(src, [event("LoanCreated", f"L-{i}", {"n": str(i)}) for i in range(6)])
    bad = uuids[3]
    calls: Counter[str] = Counter()
    healthy = {"on": False}

    app = ConsumerApp("dlq-test", conns, group=f"{src}-g", retries=2, backoff=0.01)

    @app.on(src, event="LoanCreated")
    def created(ev, ctx):
        calls[ev.uuid] += 1
        if ev.uuid == bad and not healthy["on"]:
            raise ValueError(f"cannot book {ev.entity.entity_id}")

    stats = app.run(timeout=60, max_messages=6)
    assert calls[bad] == 3  # first try + 2 retries
    assert (stats.processed, stats.dead_lettered, stats.retried, stats.failed) == (5, 1, 2, 3)

    dlq = app.dlq_topic(src)
    assert dlq == f"{src}.dlq-test.dlq"
    [rec] = read_dlq(conns, dlq)
    f = rec.failure
    assert f["error"] == "ValueError: cannot book L-3"
    assert (f["stage"], f["topic"], f["attempts"], f["consumer"], f["event_uuid"]) == (
        "handler",
        src,
        "3",
        "dlq-test",
        bad,
    )
    assert int(f["offset"]) >= 0 and f["partition"] in {"0", "1"}
    assert rec.key == b"L-3"
    assert "ValueError: cannot book" in f["error.stack"]
    assert {d.topic: d.records for d in list_dlqs(conns)}[dlq] == 1

    # Everything was committed: a second run of the same group sees nothing new.
    assert app.run(timeout=3).processed == 5

    # Replay into the handler directly (the handler is fixed now), twice: the second run is a no-op.
    healthy["on"] = True
    first = replay(conns, dlq, app=app)
    assert (first.replayed, first.targets) == (1, {src: 1})
    assert calls[bad] == 4
    again = replay(conns, dlq, app=app)
    assert (again.replayed, again.skipped) == (0, 1)
    assert calls[bad] == 4

    # Replay to the origin topic (transactional, read_committed): the group gets it once more.
    back = replay(conns, dlq)
    assert (back.replayed, back.targets) == (1, {src: 1})
    assert replay(conns, dlq).replayed == 0
    app.run(timeout=20, max_messages=1)
    assert calls[bad] == 5


def test_undecodable_record_goes_to_the_dlq_without_retries(conns, topic, produce) -> None:
    src = topic(partitions=1)
    produce_raw(conns, src, b"not avro at all")
    produce(src, [event("LoanCreated", "L-ok")])
    seen = []
    app = ConsumerApp("poison", conns, group=f"{src}-g", retries=5, backoff=10)
    app.on(src)(lambda ev: seen.append(ev.entity.entity_id))
    stats = app.run(timeout=30, max_messages=2)
    assert seen == ["L-ok"] and stats.dead_lettered == 1 and stats.retried == 0
    [rec] = read_dlq(conns, app.dlq_topic(src))
    assert rec.value == b"not avro at all" and rec.failure["stage"] == "decode"
    assert "Confluent wire format" in rec.failure["error"]


def test_without_a_dlq_a_failing_handler_stops_the_app_and_commits_nothing(conns, topic, produce) -> None:
    src = topic(partitions=1)
    produce(src, [event("LoanCreated", "L-1")])
    app = ConsumerApp("nodlq", conns, group=f"{src}-g", retries=1, backoff=0.01, dlq=False)

    @app.on(src)
    def fail(ev):
        raise RuntimeError("down")

    with pytest.raises(HandlerFailed, match="RuntimeError: down"):
        app.run(timeout=30)
    seen = []
    fixed = ConsumerApp("nodlq", conns, group=f"{src}-g", dlq=False)
    fixed.on(src)(lambda ev: seen.append(ev.uuid))
    fixed.run(timeout=20, max_messages=1)
    assert len(seen) == 1  # redelivered: the failed record was never committed


def test_a_missing_topic_fails_fast_with_a_hint(conns) -> None:
    app = ConsumerApp("missing", conns)
    app.on("no-such-topic-7c2e")(lambda ev: None)
    with pytest.raises(ConsumerError, match="topic no-such-topic-7c2e does not exist") as err:
        app.run(timeout=5)
    assert "topics apply" in (err.value.hint or "")
    assert "no-such-topic-7c2e.missing.dlq" not in list_dlqs_names(conns)


def list_dlqs_names(conns) -> list[str]:
    return [d.topic for d in list_dlqs(conns)]


def test_dlq_list_includes_captures_dead_letter_topic(conns, topic) -> None:
    """`dlq list` with no topic shows capture's `<raw>.capture-dlq` too, counted, under its raw topic."""
    raw = topic(partitions=1)
    capture_dlq = f"{raw}.capture-dlq"  # deleted with `raw` by the fixture
    ensure_topic(conns, capture_dlq, 1)
    produce_raw(conns, capture_dlq, b'{"error": "too large"}')
    produce_raw(conns, capture_dlq, b'{"error": "too large"}')
    found = {d.topic: d for d in list_dlqs(conns)}
    assert capture_dlq in found, sorted(found)
    assert (found[capture_dlq].records, found[capture_dlq].origin, found[capture_dlq].consumer) == (
        2,
        raw,
        "capture",
    )
