"""The local Flink session cluster and its SQL Gateway, started by the stack, for real.

A statement submitted over the gateway's REST API becomes a Flink job that reaches RUNNING on
the JobManager, and the gateway plans a table with the Kafka connector and avro-confluent format
(so the jars from Maven Central are on its class path).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration


class Gateway:
    """The few SQL Gateway v3 calls this test needs (the product's client lives in cdcrouter.deploy)."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url.rstrip("/") + "/v3", timeout=60)
        self.session = self.http.post("/sessions", json={"properties": {}}).json()["sessionHandle"]

    def run(self, statement: str, timeout: float = 120.0) -> dict[str, Any]:
        resp = self.http.post(f"/sessions/{self.session}/statements", json={"statement": statement})
        resp.raise_for_status()
        op = resp.json()["operationHandle"]
        deadline = time.monotonic() + timeout
        while True:
            status = self.http.get(f"/sessions/{self.session}/operations/{op}/status").json()["status"]
            if status in ("FINISHED", "ERROR", "CANCELED", "TIMEOUT"):
                break
            assert time.monotonic() < deadline, f"statement still {status} after {timeout}s: {statement}"
            time.sleep(0.2)
        result = self.http.get(
            f"/sessions/{self.session}/operations/{op}/result/0", params={"rowFormat": "JSON"}
        ).json()
        assert status == "FINISHED", f"{statement!r} ended {status}: {str(result)[:2000]}"
        return result

    def close(self) -> None:
        self.http.delete(f"/sessions/{self.session}")
        self.http.close()


@pytest.fixture(scope="module")
def flink_stack(stack_with: Callable[..., Any]) -> Any:
    return stack_with("sql-gateway")


@pytest.fixture
def gateway(flink_stack: Any) -> Iterator[Gateway]:
    gw = Gateway(flink_stack.sql_gateway_url)
    yield gw
    gw.close()


def test_gateway_reports_flink_version(flink_stack: Any) -> None:
    from cdcrouter.stack import versions

    info = httpx.get(flink_stack.sql_gateway_url + "/v3/info", timeout=10).json()
    assert info["version"] == versions.FLINK
    assert flink_stack.sql_gateway_url.startswith("http://127.0.0.1:")


def test_submitted_statement_runs_as_flink_job(flink_stack: Any, gateway: Gateway) -> None:
    gateway.run(
        "CREATE TEMPORARY TABLE src (x BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '5')"
    )
    gateway.run("CREATE TEMPORARY TABLE snk (x BIGINT) WITH ('connector' = 'blackhole')")
    result = gateway.run("INSERT INTO snk SELECT x FROM src")
    job_id = result.get("jobID") or result["results"]["data"][0]["fields"][0]
    rest = httpx.Client(base_url=flink_stack.flink_rest_url, timeout=10)
    try:
        # RUNNING means the job record *and* its tasks: the TaskManager took the work.
        deadline = time.monotonic() + 60
        state, tasks = "", []
        while time.monotonic() < deadline:
            job = rest.get(f"/jobs/{job_id}").json()
            state, tasks = job["state"], [v["status"] for v in job["vertices"]]
            if state == "RUNNING" and tasks and all(t == "RUNNING" for t in tasks):
                break
            assert state not in ("FAILED", "CANCELED", "FINISHED"), f"job ended {state}"
            time.sleep(0.5)
        assert state == "RUNNING", state
        assert tasks and all(t == "RUNNING" for t in tasks), tasks
    finally:
        rest.patch(f"/jobs/{job_id}", params={"mode": "cancel"})
        rest.close()


def test_gateway_plans_kafka_avro_confluent_tables(gateway: Gateway) -> None:
    gateway.run(
        "CREATE TEMPORARY TABLE k (x STRING) WITH ('connector' = 'kafka', 'topic' = 't',"
        " 'properties.bootstrap.servers' = '127.0.0.1:9092', 'format' = 'avro-confluent',"
        " 'avro-confluent.url' = 'http://127.0.0.1:8080/apis/ccompat/v7',"
        " 'scan.startup.mode' = 'earliest-offset')"
    )
    result = gateway.run("EXPLAIN SELECT x FROM k WHERE REGEXP(x, 'a')")
    plan = result["results"]["data"][0]["fields"][0]
    assert "TableSourceScan" in plan and "REGEXP" in plan
