"""The Helm chart (deploy/helm/cdcrouter): linted, rendered with several value sets, every rendered
manifest strictly decoded into the Kubernetes API types (tests/shipping/k8s_validate), and the
facts the deployment depends on asserted on the rendered YAML. There is no cluster here: these
tests are what keeps the chart honest.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from capture.capture_helpers import drop_capture_objects, make_pipeline
from cdcrouter.capture import apply_domain
from cdcrouter.capture.pipeline import load_pipeline
from cdcrouter.filters import load_filters_text
from route.routekit import delete_topics, setup_env

from . import tools

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "cdcrouter"
RELEASE = "prod"
SECRET_ENV = [
    {"name": "CDCROUTER_POSTGRES__PASSWORD", "secretName": "pg-credentials", "key": "password"},
    {"name": "CDCROUTER_KAFKA__SASL_PASSWORD", "secretName": "kafka-credentials", "key": "secret"},
]
CONSUMER = {"name": "loans", "command": ["python", "-m", "loanconsumer"], "replicas": 2}

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "one-router": {"router": {"replicas": 1}},
    "three-routers-monitored": {"router": {"replicas": 3}, "metrics": {"podMonitor": {"enabled": True}}},
    "consumers-and-secrets": {
        "consumers": [CONSUMER],
        "connections": {
            "existingSecret": "cdcrouter-connections",
            "secretEnv": SECRET_ENV,
            "env": {"CDCROUTER_KAFKA__BOOTSTRAP_SERVERS": "kafka:9092"},
        },
        "config": {
            "pipeline": (REPO / "examples" / "pipeline.yaml").read_text(),
            "filters": (REPO / "examples" / "filters.yaml").read_text(),
        },
    },
    "router-only": {"capture": {"enabled": False}, "router": {"pdb": {"enabled": False}}},
}


@pytest.fixture(scope="module")
def helm() -> Path:
    return tools.helm()


@cache
def _render_text(helm: Path, value_set: str, tmp: Path) -> str:
    values = tmp / f"{value_set}.yaml"
    values.write_text(yaml.safe_dump(VALUE_SETS[value_set]))
    done = subprocess.run(
        [str(helm), "template", RELEASE, str(CHART), "-f", str(values)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def render(helm: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("values")

    def rendered(value_set: str) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(_render_text(helm, value_set, tmp)) if d]

    rendered.text = lambda value_set: _render_text(helm, value_set, tmp)  # type: ignore[attr-defined]
    return rendered


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"{kind} *{name_suffix}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    return c


def arg_after(args: list[str], option: str) -> str:
    return args[args.index(option) + 1]


def test_helm_lint_strict(helm: Path, tmp_path: Path) -> None:
    for value_set, values in VALUE_SETS.items():
        file = tmp_path / f"{value_set}.yaml"
        file.write_text(yaml.safe_dump(values))
        lint = [str(helm), "lint", "--strict", str(CHART), "-f", str(file)]
        done = subprocess.run(lint, capture_output=True)
        assert done.returncode == 0, f"{value_set}: {done.stdout.decode()}{done.stderr.decode()}"


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_rendered_manifests_decode_strictly_into_kubernetes_types(render, value_set: str) -> None:
    """Every built-in kind decodes into k8s.io/api with unknown fields refused; only the PodMonitor
    (a Prometheus Operator CRD) is outside that schema set."""
    done = subprocess.run(
        [str(tools.k8s_validate())], input=render.text(value_set), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    skipped = [line for line in done.stdout.splitlines() if not line.startswith("ok ")]
    expected = ["skipped PodMonitor prod-cdcrouter"] if value_set == "three-routers-monitored" else []
    assert skipped == expected
    assert len(done.stdout.splitlines()) == len(render(value_set))


def test_validator_refuses_an_unknown_field(render) -> None:
    """The oracle can fail: a misspelt field in a StatefulSet is an error."""
    text = render.text("defaults").replace("podManagementPolicy:", "podManagmentPolicy:")
    done = subprocess.run([str(tools.k8s_validate())], input=text, capture_output=True, text=True)
    assert done.returncode == 1
    assert 'unknown field "spec.podManagmentPolicy"' in done.stdout


def test_capture_is_one_replica_recreated(render) -> None:
    capture = one(render("defaults"), "Deployment", "-capture")
    assert capture["spec"]["replicas"] == 1
    assert capture["spec"]["strategy"] == {"type": "Recreate"}
    args = container(capture)["args"]
    assert args[:4] == ["--log-format", "json", "capture", "run"]
    assert arg_after(args, "--pipeline") == "/config/pipeline.yaml"


@pytest.mark.parametrize(
    ("value_set", "replicas"), [("one-router", 1), ("defaults", 2), ("three-routers-monitored", 3)]
)
def test_routers_are_a_statefulset_whose_pod_names_are_instance_ids(
    render, value_set: str, replicas: int
) -> None:
    docs = render(value_set)
    sts = one(docs, "StatefulSet", "-router")
    assert sts["metadata"]["name"] == "prod-cdcrouter-router"  # pods: prod-cdcrouter-router-0, -1, ...
    assert sts["spec"]["replicas"] == replicas
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    service = one(docs, "Service", "-router")
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    c = container(sts)
    # the instance id is left to its default, the host name = the pod name
    assert "--instance-id" not in c["args"]
    assert "CDCROUTER_INSTANCE_ID" not in {e["name"] for e in c["env"]}
    assert c["args"][:3] == ["--log-format", "json", "run"]
    assert arg_after(c["args"], "--filters") == "/config/filters.yaml"
    assert arg_after(c["args"], "--group") == "cdcrouter-router"
    assert sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30


def test_the_router_instance_id_defaults_to_the_host_name() -> None:
    """What the chart relies on, from the CLI's own help (oracle: the router, not the chart)."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "cdcrouter"), "run", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert "default: the host name" in " ".join(done.stdout.split())


@pytest.mark.parametrize("value_set", ["defaults", "consumers-and-secrets"])
def test_every_pod_has_probes_on_its_metrics_port_and_resources(render, value_set: str) -> None:
    workloads = [d for d in render(value_set) if d["kind"] in ("Deployment", "StatefulSet")]
    assert len(workloads) == (2 if value_set == "defaults" else 3)
    for w in workloads:
        c = container(w)
        (port,) = c["ports"]
        assert port["name"] == "metrics" and port["containerPort"] == 9464
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert {"name": "CDCROUTER_LOG_FORMAT", "value": "json"} in c["env"]
        if "args" in c and c["args"][0] == "--log-format":  # capture and router serve it themselves
            assert arg_after(c["args"], "--metrics-port") == "9464"
            assert arg_after(c["args"], "--metrics-address") == "0.0.0.0"
            assert set(c["resources"]["requests"]) == {"cpu", "memory"}
        pod = w["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_rendered_arguments_parse_with_the_real_cli(render) -> None:
    """A misspelt option in the chart would crash-loop every pod: the CLI parses each command line
    (``--help`` at the end stops before anything connects; an unknown option is exit 2)."""
    exe = Path(sys.executable).parent / "cdcrouter"
    docs = render("defaults")
    for w in (one(docs, "Deployment", "-capture"), one(docs, "StatefulSet", "-router")):
        args = container(w)["args"]
        done = subprocess.run([str(exe), *args, "--help"], capture_output=True, text=True)
        assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
    bad = subprocess.run([str(exe), "run", "--metrics-adress", "0.0.0.0", "--help"], capture_output=True)
    assert bad.returncode == 2  # the check can fail


def test_config_is_a_configmap_directory_not_subpath(render, tmp_path: Path) -> None:
    docs = render("consumers-and-secrets")
    cm = one(docs, "ConfigMap", "-config")
    # the files the pods read are the files given, and cdcrouter's own loaders accept them
    (tmp_path / "pipeline.yaml").write_text(cm["data"]["pipeline.yaml"])
    assert load_pipeline(tmp_path / "pipeline.yaml").raw_topic.name
    assert load_filters_text(cm["data"]["filters.yaml"]).filters
    assert cm["data"]["filters.yaml"].strip() == (REPO / "examples" / "filters.yaml").read_text().strip()
    for w in (d for d in docs if d["kind"] in ("Deployment", "StatefulSet")):
        pod = w["spec"]["template"]["spec"]
        mounts = {m["name"]: m for m in container(w)["volumeMounts"]}
        assert mounts["config"]["mountPath"] == "/config"
        assert "subPath" not in mounts["config"]  # a subPath copy never sees a ConfigMap update
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["config"]["configMap"]["name"] == cm["metadata"]["name"]


def test_secrets_come_only_from_secret_references(render) -> None:
    docs = render("consumers-and-secrets")
    assert not [d for d in docs if d["kind"] == "Secret"]
    for w in (d for d in docs if d["kind"] in ("Deployment", "StatefulSet")):
        c = container(w)
        assert c["envFrom"] == [{"secretRef": {"name": "cdcrouter-connections"}}]
        env = {e["name"]: e for e in c["env"]}
        for ref in SECRET_ENV:
            assert env[ref["name"]] == {
                "name": ref["name"],
                "valueFrom": {"secretKeyRef": {"name": ref["secretName"], "key": ref["key"]}},
            }
        for name, e in env.items():
            if any(word in name for word in ("PASSWORD", "SECRET", "USER_INFO", "KEY")):
                assert "value" not in e, name
        assert env["CDCROUTER_KAFKA__BOOTSTRAP_SERVERS"]["value"] == "kafka:9092"
    # and the chart's defaults carry no credentials either
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert defaults["connections"] == {"existingSecret": "", "secretEnv": [], "env": {}}


def test_pdb_covers_the_routers_and_podmonitor_only_when_enabled(render) -> None:
    docs = render("three-routers-monitored")
    sts = one(docs, "StatefulSet", "-router")
    pdb = one(docs, "PodDisruptionBudget", "-router")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == sts["spec"]["selector"]
    monitor = one(docs, "PodMonitor")
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert not [d for d in render("defaults") if d["kind"] == "PodMonitor"]
    assert not [d for d in render("router-only") if d["kind"] in ("PodDisruptionBudget",)]
    assert not [d for d in render("router-only") if d["metadata"]["name"].endswith("-capture")]


def test_consumer_apps_run_their_command_in_the_image(render) -> None:
    docs = render("consumers-and-secrets")
    app = one(docs, "Deployment", "-consumer-loans")
    c = container(app)
    assert c["command"] == CONSUMER["command"]
    assert c["image"] == "cdcrouter:0.1.0"
    assert app["spec"]["replicas"] == 2
    sts = one(docs, "StatefulSet", "-router")
    assert app["spec"]["selector"] != sts["spec"]["selector"]  # a consumer is never counted as a router


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_as_in_the_pod(c: dict[str, Any], config: Path, replace: dict[str, str], env: dict[str, str]):
    """Start a rendered container's command line and environment here (``/config`` moved to
    ``config``, option values in ``replace`` swapped), wait until both probes' paths answer 200,
    and return the process and its port. Liveness and readiness come from the rendered probes."""
    port = _free_port()
    args = [a.replace("/config/", f"{config}/") for a in c["args"]]
    for option, value in {**replace, "--metrics-port": str(port)}.items():
        args[args.index(option) + 1] = value
    pod_env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "cdcrouter"), *args],
        env={**os.environ, **env, **pod_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    paths = c["readinessProbe"]["httpGet"]["path"], c["livenessProbe"]["httpGet"]["path"]
    deadline = time.monotonic() + 90
    answers: dict[str, int] = {}
    while time.monotonic() < deadline and set(answers.values()) != {200}:
        if proc.poll() is not None:
            pytest.fail(f"exited {proc.returncode}: {proc.communicate()[1][-2000:]}")
        for path in paths:
            try:
                answers[path] = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).status_code
            except httpx.TransportError:
                answers[path] = 0
        time.sleep(0.5)
    if answers != {"/readyz": 200, "/healthz": 200}:
        proc.kill()
        pytest.fail(f"probes answered {answers}: {proc.communicate()[1][-2000:]}")
    return proc


def stop_like_kubernetes(proc: subprocess.Popen[str]) -> list[str]:
    """SIGTERM (what the kubelet sends), then the exit code and stderr's JSON log records."""
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and all(isinstance(json.loads(line), dict) for line in lines), err[-2000:]
    return lines


@pytest.mark.integration
@pytest.mark.stack_services("kafka", "registry")
def test_rendered_router_command_routes_and_answers_its_probes(
    render, stack: Any, unique_name: Any, tmp_path: Path
) -> None:
    """The router container's command line and environment, exactly as rendered (only /config and
    the port moved to this machine), routes on the real stack, answers the liveness and readiness
    probes' paths with 200, logs JSON lines and stops cleanly on SIGTERM."""
    env = setup_env(stack.connections, unique_name, tmp_path, filters=3)
    try:
        c = container(one(render("defaults"), "StatefulSet", "-router"))
        config = tmp_path / "config"
        config.mkdir()
        pipeline = yaml.safe_load((REPO / "examples" / "pipeline.yaml").read_text())
        pipeline["raw_topic"]["name"] = env.raw
        (config / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
        (config / "filters.yaml").write_text(env.filters_path.read_text())
        group = env.prefix + "g"
        env.produce(0, 300)
        proc = run_as_in_the_pod(c, config, {"--group": group}, {})
        try:
            env.wait_committed(group, 300)
        finally:
            stop_like_kubernetes(proc)
    finally:
        delete_topics(env)


@pytest.mark.integration
def test_rendered_capture_command_streams_and_answers_its_probes(
    render, stack: Any, unique_name: Any, tmp_path: Path
) -> None:
    """The capture container's rendered command line and environment: ready (streaming from its
    slot) on the real PostgreSQL and Kafka, JSON logs, a clean stop on SIGTERM."""
    name = unique_name("chartcap")
    schema = name.replace("-", "_")
    conns = stack.connections
    apply_domain(conns.postgres.conninfo(), schema)
    pipeline = make_pipeline(schema, name)
    try:
        c = container(one(render("defaults"), "Deployment", "-capture"))
        config = tmp_path / "config"
        config.mkdir()
        doc = pipeline.model_dump(by_alias=True, exclude={"source_file", "connections"}, exclude_none=True)
        (config / "pipeline.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(doc, default=str))))
        proc = run_as_in_the_pod(c, config, {}, {})
        lines = stop_like_kubernetes(proc)
        assert any(pipeline.raw_topic.name in json.loads(line).get("message", "") for line in lines)
    finally:
        drop_capture_objects(conns, pipeline, schema)
