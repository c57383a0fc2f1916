"""``cdcrouter deploy --target confluent-cloud`` end to end through the CLI, against the local
stand-in for Confluent Cloud's statements API: plan first, apply, update, lifecycle, no secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdcrouter.cli.main import main
from cdcrouter_testing.fake_confluent_cloud import FakeConfluentCloud

SECRET = "cc-secret-must-not-appear"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "filters.yaml"


@pytest.fixture
def cc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    with FakeConfluentCloud(api_key="KEY1", api_secret=SECRET, step_seconds=0.02) as fake:
        env = {
            "FLINK_ENDPOINT": fake.url,
            "ORGANIZATION_ID": fake.organization_id,
            "ENVIRONMENT_ID": fake.environment_id,
            "COMPUTE_POOL_ID": "lfcp-1",
            "PRINCIPAL": "sa-1",
            "CATALOG": "env",
            "DATABASE": "cluster",
            "FLINK_API_KEY": "KEY1",
            "FLINK_API_SECRET": SECRET,
        }
        for k, v in env.items():
            monkeypatch.setenv(f"CDCROUTER_CONFLUENT_CLOUD__{k}", v)
        monkeypatch.setenv("CDCROUTER_STATE_DIR", str(tmp_path / "state"))
        monkeypatch.chdir(tmp_path)
        yield fake


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["deploy", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_plan_apply_update_and_lifecycle(cc: FakeConfluentCloud, capsys, tmp_path: Path) -> None:
    filters = tmp_path / "filters.yaml"
    filters.write_text(EXAMPLES.read_text())
    args = ["--target", "confluent-cloud", "--filters", str(filters), "--name", "routing"]

    code, out = run(capsys, *args, "--dry-run")
    assert code == 0 and "+ create" in out and not cc.statements  # a dry run changes nothing

    code, out = run(capsys, *args)  # not a TTY and no --yes: refuse
    assert code == 1 and "--yes" in out and not cc.statements

    code, out = run(capsys, *args, "--yes")
    assert code == 0, out
    running = [n for n, st in cc.statements.items() if st.phase == "RUNNING"]
    assert len(running) == 1 and running[0].startswith("routing-")
    assert all("'connector'" not in st.body["spec"]["statement"] for st in cc.statements.values())

    code, out = run(capsys, *args, "--yes")
    assert code == 0 and "nothing to do" in out

    filters.write_text(EXAMPLES.read_text().replace("LoanCreated", "LoanOpened"))
    cc.topic_end["raw-business-events"] = {0: 42}
    code, out = run(capsys, *args, "--yes")
    assert code == 0 and "~ replace" in out and "initial-offset-from" in out, out
    new = [n for n, st in cc.statements.items() if st.phase == "RUNNING"]
    assert len(new) == 1 and new != running and running[0] not in cc.statements
    assert cc.statements[new[0]].start_offsets == {"raw-business-events": {0: 42}}

    life = ["--target", "confluent-cloud", "--name", "routing"]
    assert run(capsys, "stop", *life)[0] == 0 and cc.statements[new[0]].phase == "STOPPED"
    code, out = run(capsys, "status", *life, "--format", "json")
    assert code == 0 and '"STOPPED"' in out and "partition:0,offset:42" in out
    assert run(capsys, "resume", *life)[0] == 0 and cc.statements[new[0]].phase == "RUNNING"
    code, out = run(capsys, "list", "--target", "confluent-cloud")
    assert code == 0 and new[0] in out
    assert run(capsys, "delete", *life, "--yes")[0] == 0 and not cc.statements

    logged = out + str(cc.requests) + "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    assert SECRET not in logged


def test_missing_settings_are_named(monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for k in ("FLINK_ENDPOINT", "FLINK_API_SECRET"):
        monkeypatch.delenv(f"CDCROUTER_CONFLUENT_CLOUD__{k}", raising=False)
    (tmp_path / "filters.yaml").write_text(EXAMPLES.read_text())
    code, out = run(capsys, "--target", "confluent-cloud", "--dry-run")
    assert code == 1 and "flink_endpoint" in out and "CDCROUTER_CONFLUENT_CLOUD__FLINK_API_SECRET" in out
    assert "Traceback" not in out
