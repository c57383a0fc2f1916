"""The drill's verifier counts what it must: losses, repeated uuids, a change under two uuids,
misrouted events, and acknowledged commits the database lost (pure functions); and a drill whose
scenario fails with a library's error ends with a failed report, not a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path

from cdcrouter.dr.report import check_view
from cdcrouter.dr.verify import SeenEvent, verify


def ev(topic: str, uuid: str, eid: str, val: str, offset: int = 0) -> SeenEvent:
    return SeenEvent(topic, 0, offset, uuid, eid, val)


def test_every_kind_of_discrepancy_is_counted() -> None:
    rows = {"r-1": "0a", "r-2": "9b", "r-3": "1c", "r-4": "2d"}
    topics = {"all": lambda i, v: True, "half": lambda i, v: v[:1] in "01234567"}
    events = [
        ev("all", "u1", "r-1", "0a"),
        ev("all", "u1", "r-1", "0a", 1),  # the same uuid again: removable by uuid dedup
        ev("all", "u2", "r-2", "9b"),
        ev("all", "u3", "r-3", "1c"),
        ev("all", "u3b", "r-3", "1c"),  # the same change under a second uuid: not removable
        # r-4 never reached "all": lost
        ev("half", "u1", "r-1", "0a"),
        ev("half", "u2", "r-2", "9b"),  # 9b does not belong in "half": misrouted
        ev("half", "u4", "r-4", "2d"),
        # r-3 never reached "half": lost
        ev("all", "u9", "r-9", "ff"),  # no such committed row: a phantom
    ]
    v = verify(rows, acked={**rows, "r-5": "3e"}, in_doubt={"r-4": "2d"}, events=events, topics=topics)
    by = {t.topic: t for t in v.topics}
    assert by["all"].lost == ["r-4"] and by["half"].lost == ["r-3"]
    assert by["all"].duplicate_uuids == 1 and by["all"].duplicate_changes == 1
    assert by["half"].unexpected == ["r-2"] and by["all"].unexpected == ["r-9"]
    assert (v.lost, v.duplicate_uuids, v.duplicate_changes, v.unexpected) == (2, 1, 1, 2)
    assert v.db_lost == ["r-5"]  # acknowledged, but the surviving database does not have it
    assert (v.in_doubt, v.in_doubt_committed) == (1, 1)


def test_a_clean_run_has_nothing_to_report() -> None:
    rows = {"r-1": "0a", "r-2": "9b"}
    events = [ev("all", "u1", "r-1", "0a"), ev("all", "u2", "r-2", "9b")]
    v = verify(rows, rows, {}, events, {"all": lambda i, v: True})
    assert (v.lost, v.duplicate_uuids, v.duplicate_changes, v.unexpected, v.db_lost) == (0, 0, 0, 0, [])


def test_the_consumer_view_check() -> None:
    committed = {"r-1": "0a", "r-2": "9b", "r-3": "1c"}
    view = {"r-1": ("0a", 1), "r-2": ("zz", 3)}
    w = check_view(committed, view)
    assert w.missing == ["r-3"] and w.wrong == ["r-2"] and w.extra_deliveries == 2


class _Broken:
    """A scenario whose preparation fails with a library's own error (not a CdcrouterError)."""

    name = "broken"
    description = "prepare raises KafkaException"

    def prepare(self, ctx) -> None:  # type: ignore[no-untyped-def]
        from confluent_kafka import KafkaError, KafkaException

        raise KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))

    def surviving(self, ctx):  # type: ignore[no-untyped-def]
        return ctx.conns

    def inject(self, ctx) -> None:  # type: ignore[no-untyped-def]
        raise AssertionError("not reached")

    def recover(self, ctx) -> None:  # type: ignore[no-untyped-def]
        raise AssertionError("not reached")

    def cleanup(self, ctx) -> None:  # type: ignore[no-untyped-def]
        pass


def test_a_library_error_fails_the_drill_with_a_report_not_a_traceback(
    pg_dsn: str, stack, unique_name, tmp_path: Path
) -> None:
    """Also: given a workdir (the tests' tmp_path), a failed drill keeps its logs there and says
    where; it used to keep a mkdtemp directory in /tmp, one per failed drill of every test run."""
    from cdcrouter.dr.drill import DrillOptions, run_drill

    name = unique_name("drb")
    report = run_drill(_Broken(), stack.connections, DrillOptions(name=name, workdir=tmp_path))
    assert not report.ok
    assert report.error is not None and report.error.startswith("KafkaException")
    assert "drill failed: KafkaException" in report.render()
    assert f"the processes' logs are kept in {tmp_path / 'processes' / 'logs'}" in report.render()
    assert not list(Path(tempfile.gettempdir()).glob(f"cdcrouter-{name}-*"))
