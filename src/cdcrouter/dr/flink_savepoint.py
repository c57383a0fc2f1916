"""A savepoint of every running cdcrouter Flink job, for ``dr backup --flink-rest URL``.

The job keeps running (``cancel-job: false``); the savepoint lands in the cluster's
``execution.checkpointing.savepoint-dir``. Only jobs cdcrouter deployed (their name carries the
deployment name and SQL hash, see deploy/flink_target.py) of deployments recorded in the state
directory are touched: a shared Flink cluster runs other people's jobs too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from cdcrouter.errors import CdcrouterError


def trigger_savepoints(
    rest_url: str, deployments: set[str], say: Callable[[str], None], timeout_s: float = 300.0
) -> list[dict[str, Any]]:
    """A savepoint of each running job of ``deployments`` (names), the job left running."""
    from cdcrouter.deploy.flink_target import parse_job_name

    url = rest_url.rstrip("/")
    out: list[dict[str, Any]] = []
    try:
        with httpx.Client(timeout=30) as http:
            jobs = http.get(f"{url}/jobs/overview").raise_for_status().json().get("jobs", [])
            for job in jobs:
                parsed = parse_job_name(job.get("name", ""))
                if job.get("state") != "RUNNING" or parsed is None or parsed[0] not in deployments:
                    continue
                jid = job["jid"]
                trigger = http.post(f"{url}/jobs/{jid}/savepoints", json={"cancel-job": False})
                request_id = trigger.raise_for_status().json()["request-id"]
                deadline = time.monotonic() + timeout_s
                while True:
                    res = http.get(f"{url}/jobs/{jid}/savepoints/{request_id}").raise_for_status().json()
                    if res.get("status", {}).get("id") == "COMPLETED":
                        op = res.get("operation", {})
                        location = op.get("location")
                        out.append(
                            {
                                "deployment": parsed[0],
                                "sql_hash": parsed[1],
                                "job_id": jid,
                                "savepoint": location,
                                "failure": None if location else str(op)[:500],
                            }
                        )
                        say(f"flink: savepoint of job {jid} ({parsed[0]}): {location or 'failed'}")
                        break
                    if time.monotonic() > deadline:
                        raise CdcrouterError(f"savepoint of Flink job {jid} not done after {timeout_s:.0f} s")
                    time.sleep(0.5)
    except httpx.HTTPError as exc:
        raise CdcrouterError(
            f"Flink REST {url}: {type(exc).__name__}: {exc}",
            hint="is the JobManager up? leave out --flink-rest to record the saved state only",
        ) from exc
    return out
