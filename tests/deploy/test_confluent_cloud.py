"""The Confluent Cloud statements client and deployment, against the local stand-in server that
follows the published OpenAPI (Confluent Cloud itself cannot run here)."""

from __future__ import annotations

import pytest

from cdcrouter.deploy.cc_target import CloudDeployment, with_offset_hints
from cdcrouter.deploy.confluent_cloud import ConfluentCloudFlink, parse_offsets
from cdcrouter.errors import DeployError
from cdcrouter_testing.fake_confluent_cloud import FakeConfluentCloud

SECRET = "s3cr3t-do-not-leak"

CC_SCRIPT = """
SET 'sql.state-ttl' = '0 ms';
CREATE TABLE IF NOT EXISTS `filtered-loans` (
  `key` STRING, eventHeader ROW<uuid STRING, eventName STRING>
) DISTRIBUTED BY HASH(`key`) INTO 6 BUCKETS
  WITH ('changelog.mode' = 'append', 'value.format' = 'avro-registry');
EXECUTE STATEMENT SET BEGIN
INSERT INTO `filtered-loans` SELECT eventHeader.uuid, eventHeader FROM `raw-business-events`
  WHERE eventHeader.eventName = '{name}';
END;
"""


@pytest.fixture
def fake():
    with FakeConfluentCloud(api_secret=SECRET, step_seconds=0.05) as cc:
        yield cc


def client(fake: FakeConfluentCloud, secret: str = SECRET) -> ConfluentCloudFlink:
    return ConfluentCloudFlink(
        fake.url, fake.organization_id, fake.environment_id, "FAKEKEY", secret,
        compute_pool_id="lfcp-123", principal="sa-123", catalog="env", database="cluster",
    )  # fmt: skip


def test_create_get_list_pages_delete(fake: FakeConfluentCloud) -> None:
    api = client(fake)
    for i in range(7):
        created = api.create(f"s-{i}", "SELECT 1")
        assert created["status"]["phase"] == "PENDING"
        assert created["spec"]["properties"] == {
            "sql.current-catalog": "env",
            "sql.current-database": "cluster",
        }
    listed = api.list(page_size=3)
    assert [s["name"] for s in listed] == [f"s-{i}" for i in range(7)]
    assert sum(1 for m, p, _ in fake.requests if m == "GET" and "page_size=3" in p) == 3
    with pytest.raises(DeployError, match="already exists"):
        api.create("s-0", "SELECT 1")
    api.delete("s-0")
    assert api.find("s-0") is None
    assert api.wait_phase("s-1", ("RUNNING",), 5)["status"]["phase"] == "RUNNING"


def test_stop_resume_retries_on_stale_resource_version(fake: FakeConfluentCloud) -> None:
    api = client(fake)
    api.create("job-a", "INSERT INTO t SELECT * FROM `raw`")
    api.wait_phase("job-a", ("RUNNING",), 5)
    fake.force_conflicts = 2
    api.stop("job-a")
    puts = [b for m, _, b in fake.requests if m == "PUT"]
    assert len(puts) == 3 and all(b["metadata"]["resource_version"] for b in puts)
    assert api.wait_phase("job-a", ("STOPPED",), 5)["spec"]["stopped"] is True
    api.resume("job-a")
    assert api.wait_phase("job-a", ("RUNNING",), 5)["spec"]["stopped"] is False


def test_bad_credentials_and_names_are_refused_without_leaking_the_secret(fake: FakeConfluentCloud) -> None:
    with pytest.raises(DeployError) as err:
        client(fake, secret="wrong").list()
    assert "credentials" in err.value.render() and "wrong" not in err.value.render()
    requests_before = len(fake.requests)
    with pytest.raises(DeployError, match="not valid on Confluent Cloud"):
        client(fake).create("Bad_Name", "SELECT 1")
    assert len(fake.requests) == requests_before  # refused before any request


def test_connector_option_fails_like_confluent_cloud(fake: FakeConfluentCloud) -> None:
    api = client(fake)
    dep = CloudDeployment("routing", api, lambda s: s, timeout=5)
    bad = CC_SCRIPT.replace("'changelog.mode' = 'append'", "'connector' = 'kafka'").format(name="X")
    plan, script = dep.plan(bad)
    with pytest.raises(DeployError, match="'connector' option is not supported"):
        dep.apply(plan, script)


@pytest.mark.parametrize("carry_over", ["property", "hints"])
def test_update_starts_where_the_old_statement_stopped(fake: FakeConfluentCloud, carry_over: str) -> None:
    api = client(fake)
    dep = CloudDeployment("routing", api, lambda s: s, carry_over=carry_over, timeout=5)
    plan, script = dep.plan(CC_SCRIPT.format(name="LoanCreated"))
    assert [a.verb for a in plan.actions] == ["create", "create"]
    first = dep.apply(plan, script)["statement"]
    assert fake.statements[first].body["spec"]["properties"]["sql.state-ttl"] == "0 ms"

    plan, _ = dep.plan(CC_SCRIPT.format(name="LoanCreated"))
    assert not plan.changes and [a.verb for a in plan.actions] == ["unchanged", "unchanged"]

    fake.topic_end["raw-business-events"] = {0: 120, 1: 77, 2: 5}  # how far the old one got
    plan, script = dep.plan(CC_SCRIPT.format(name="LoanUpdated"))
    assert [a.verb for a in plan.actions] == ["unchanged", "replace", "stop"]
    result = dep.apply(plan, script)
    new = result["statement"]
    assert result["replaced"] == first and api.find(first) is None
    assert fake.statements[new].phase == "RUNNING"
    assert fake.statements[new].start_offsets == {"raw-business-events": {0: 120, 1: 77, 2: 5}}
    text = fake.statements[new].body["spec"]["statement"]
    props = fake.statements[new].body["spec"]["properties"]
    if carry_over == "property":
        assert props["sql.tables.initial-offset-from"] == first and "OPTIONS" not in text
    else:
        assert "'scan.startup.specific-offsets'='partition:0,offset:120;partition:1,offset:77;" in text
        assert "sql.tables.initial-offset-from" not in props

    assert dep.stop() == new and fake.statements[new].phase == "STOPPED"
    assert dep.resume() == new and fake.statements[new].phase == "RUNNING"
    deleted = dep.delete()
    assert new in deleted and len(deleted) == 2 and not fake.statements  # the set and its DDL


def test_new_statement_waits_pending_until_the_old_one_stops(fake: FakeConfluentCloud) -> None:
    api = client(fake)
    api.create("old", "INSERT INTO t SELECT * FROM `raw`")
    api.wait_phase("old", ("RUNNING",), 5)
    api.create("new", "INSERT INTO t SELECT * FROM `raw`", {"sql.tables.initial-offset-from": "old"})
    import time

    time.sleep(0.3)
    assert api.get("new")["status"]["phase"] == "PENDING"
    api.stop("old")
    api.wait_phase("new", ("RUNNING",), 5)


def test_offset_hints() -> None:
    dml = "INSERT INTO a SELECT * FROM `raw` WHERE x; INSERT INTO b SELECT * FROM raw"
    out = with_offset_hints(dml, ["raw"], {"raw": "partition:1,offset:9;partition:0,offset:3"})
    assert out.count("'scan.startup.specific-offsets'='partition:0,offset:3;partition:1,offset:9'") == 2
    assert parse_offsets("partition:0,offset:100;partition:1,offset:200") == {0: 100, 1: 200}
    with pytest.raises(DeployError, match="no offsets"):
        with_offset_hints(dml, ["raw"], {})
