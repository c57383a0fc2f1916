"""``cdcrouter dr drill --scenario restore`` on the real stack: a backup taken while 50 changes/s
are written, the pipeline's topics, groups and subjects deleted, ``dr restore``, the pipeline
restarted. Every change after the backup's position must be in the new filtered topics once, and
every row PostgreSQL committed in the consumer's view (the oracle: the drill table)."""

from __future__ import annotations

from collections.abc import Callable

from cdcrouter.dr.report import DrillReport
from cdcrouter.dr.scenarios.restore import RestoreFromBackup, sequence_number


def test_restore_drill_loses_nothing_after_the_backup(drill: Callable[..., DrillReport]) -> None:
    scenario = RestoreFromBackup(after_backup_s=2.0)
    report = drill(scenario, min_acked=300)
    v = report.verdict
    assert v is not None and report.view is not None and report.recovery is not None
    # changes after the backup were checked (not only the ones after the restore)
    assert scenario.first_after_backup is not None
    assert v.committed >= report.acked - scenario.first_after_backup
    assert v.lost == 0 and not report.view.missing, report.render()
    assert v.unexpected == 0 and v.duplicate_changes == 0 and v.duplicate_uuids == 0
    # the app had read some changes after the backup from the old cluster: they came again, and its
    # uuid store dropped them
    assert report.view.extra_deliveries == 0
    # history before the backup's position was not replayed into the new topics
    first_new = scenario._first_new
    assert first_new is not None and first_new > 1
    assert report.recovery.rto_s is not None and report.recovery.rto_s < 120, report.recovery
    assert sequence_number("x-00000042") == 42
