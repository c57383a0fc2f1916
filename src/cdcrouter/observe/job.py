"""The routing job when routing runs on Flink or Confluent Cloud instead of the embedded router.

Which deployment to look at: the one named on the command line, else every Flink deployment that
``cdcrouter deploy`` recorded in the state directory (``<state-dir>/deploy/flink-<name>.json``),
else none. Confluent Cloud statements are looked at only when named (``--deploy-target
confluent-cloud``): ``deploy`` records nothing locally for them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cdcrouter.config import Connections
from cdcrouter.errors import CdcrouterError

FLINK_OK = ("RUNNING", "CREATED", "INITIALIZING")
CLOUD_OK = ("RUNNING", "PENDING")


def recorded_flink_deployments(state_dir: Path) -> list[str]:
    """Names of the Flink deployments ``cdcrouter deploy`` recorded under ``state_dir``."""
    names = []
    for path in sorted((state_dir / "deploy").glob("flink-*.json")):
        try:
            names.append(str(json.loads(path.read_text()).get("name") or path.stem[len("flink-") :]))
        except (OSError, ValueError):
            continue
    return names


def job_states(
    conns: Connections, state_dir: Path, target: str | None, name: str | None
) -> list[dict[str, Any]]:
    """One entry per deployment: ``target``, ``name``, ``state``, ``ok`` and the service's detail."""
    if target is None:
        return [_flink(conns, state_dir, n) for n in recorded_flink_deployments(state_dir)]
    name = name or "cdcrouter-routing"
    return [_flink(conns, state_dir, name) if target == "flink" else _cloud(conns, name)]


def _flink(conns: Connections, state_dir: Path, name: str) -> dict[str, Any]:
    from cdcrouter.deploy.flink_target import FlinkDeployment

    dep = FlinkDeployment(name, conns.flink.sql_gateway_url, conns.flink.rest_url, state_dir, lambda s: s)
    try:
        st = dep.status()
    except CdcrouterError as exc:
        return {"target": "flink", "name": name, "state": "UNREACHABLE", "ok": False, "detail": exc.message}
    state = str(st.get("state"))
    detail = {k: v for k, v in st.items() if k not in ("name", "target", "state")}
    return {"target": "flink", "name": name, "state": state, "ok": state in FLINK_OK, "detail": detail}


def _cloud(conns: Connections, name: str) -> dict[str, Any]:
    from cdcrouter.deploy.cc_target import CloudDeployment
    from cdcrouter.deploy.confluent_cloud import ConfluentCloudFlink

    try:
        statements = CloudDeployment(
            name, ConfluentCloudFlink.from_settings(conns.confluent_cloud), str
        ).status()
    except CdcrouterError as exc:
        return {
            "target": "confluent-cloud", "name": name, "state": "UNREACHABLE", "ok": False,
            "detail": exc.message,
        }  # fmt: skip
    if not statements:
        return {"target": "confluent-cloud", "name": name, "state": "NOT DEPLOYED", "ok": False, "detail": {}}
    newest = statements[0]
    state = str(newest.get("phase"))
    return {
        "target": "confluent-cloud",
        "name": name,
        "state": state,
        "ok": state in CLOUD_OK,
        "detail": {"statement": newest.get("statement"), "detail": newest.get("detail", "")},
    }
