"""``cdcrouter dashboard`` in a real headless browser (Debian's chromium) against a running
pipeline: capture and the router in-process on the shared stack, changes flowing, a consumer
application reading, and one poison record dead-lettered by the router. The page's DOM (after its
script fetched and drew the status) is checked against oracles read from Kafka and the pipeline
file, and a screenshot is kept in ``test-artifacts/dashboard.png`` to look at."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import pytest
from ruamel.yaml import YAML

from .dashboardkit import dashboard, status_until
from .statuskit import StatusEnv, free_port

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("postgres", "kafka", "registry")]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; installed with apt-get when missing and we are root. In CI (CI=true) a
    browser that cannot be had fails the test: the dashboard would go untested."""
    found = shutil.which("chromium")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "chromium"]

        def run(cmd: list[str]) -> int:
            return subprocess.run(cmd, capture_output=True, env=env, timeout=900, check=False).returncode

        if run(install) != 0:  # a fresh machine has no package lists yet
            run(["apt-get", "update", "-q"])
            run(install)
        found = shutil.which("chromium")
    if found is None:
        why = "chromium not found and not installable here (as root: apt-get install -y chromium)"
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(why)
        pytest.skip(why)
    return found


def browse(chromium: str, url: str, profile: Path, *args: str) -> str:
    """Load ``url`` headless and let its script run (virtual time stands still while a fetch is
    pending, so the first /api/status answer is drawn); stdout is what ``args`` asked for."""
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={profile}", "--virtual-time-budget=6000", *args, url]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class Page(HTMLParser):
    """The topology's nodes (``<g data-node=...>``) and the latency rows (``<tr data-route=...>``):
    their attributes and text; and the page's whole text."""

    KEYS: ClassVar[dict[str, str]] = {"g": "data-node", "tr": "data-route"}

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, dict[str, dict[str, Any]]] = {"g": {}, "tr": {}}
        self.text: list[str] = []
        self._open: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in self.KEYS and a.get(self.KEYS[tag]):
            self._open = {**a, "text": []}
            self.found[tag][str(a[self.KEYS[tag]])] = self._open

    def handle_endtag(self, tag: str) -> None:
        if tag in self.KEYS:
            self._open = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._open is not None:
            self._open["text"].append(data)


def test_the_page_draws_the_running_pipeline(
    status_env: StatusEnv, chromium: str, stack: Any, tmp_path: Path
) -> None:
    from confluent_kafka import Producer

    env = status_env
    env.start_capture()
    env.start_router()
    producer = Producer(env.conns.kafka.producer_conf())
    producer.produce(env.raw, b"not avro at all", b"k")  # undecodable: the router dead-letters it
    assert producer.flush(30) == 0
    router_dlq = f"{env.raw}.router.dlq"
    env.wait_count(router_dlq, 1)  # oracle: the DLQ itself holds one record
    cars, updates = f"{env.name}-cars", f"{env.name}-car-updates"
    fleet = f"{env.name}-fleet"
    args = ["--pipeline", str(env.pipeline_file), "--filters", str(env.filters_file), "--group", env.group]
    args += ["--interval", "2.5"]  # a window wide enough under load (as the status tests use)
    with env.consuming(fleet, cars), env.flowing(), dashboard(stack.state_dir, *args) as url:

        def flowing(doc: dict[str, Any]) -> bool:
            rates = [f["events_per_s"] or 0 for f in doc.get("filters", [])]
            return len(rates) == 2 and min(rates) > 0

        status_until(url, flowing)  # the server's newest document shows the flow: now the browser
        dom = browse(chromium, url, tmp_path / "profile", "--dump-dom")
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        shot.unlink(missing_ok=True)
        browse(chromium, url, tmp_path / "profile", "--window-size=1500,1000", f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000

    page = Page()
    page.feed(dom)
    nodes, routes, text = page.found["g"], page.found["tr"], " ".join(page.text)
    # the tables, as the pipeline file lists them (the oracle: the file, read here)
    tables = YAML(typ="safe").load(env.pipeline_file.read_text())["tables"]
    drawn_tables = {k.split(".", 1)[1] for k in nodes if k.startswith("table:")}
    assert drawn_tables >= set(tables), nodes.keys()
    # raw topic -> both filters -> both filtered topics -> the consumer group, with live rates
    assert nodes["raw"]["data-topic"] == env.raw
    for topic in (cars, updates):
        assert float(nodes[f"topic:{topic}"]["data-rate"]) > 0, nodes[f"topic:{topic}"]
    for fid in ("cars", "car-updates"):
        assert float(nodes[f"filter:{fid}"]["data-rate"]) > 0, nodes[f"filter:{fid}"]
    assert nodes[f"group:{fleet} on {cars}"]["data-group"] == fleet
    assert "streaming" in nodes["capture"]["text"]
    # the poison record: router DLQ depth 1, marked unhealthy on the picture and in the problems
    dlq = nodes[f"dlq:{router_dlq}"]
    assert dlq["data-depth"] == "1" and "bad" in dlq["class"].split(), dlq
    assert "DLQ (router): 1" in "".join(dlq["text"])
    assert "dlq_not_empty" in text and "unhealthy" in text
    # nothing else is marked: the flowing pipeline itself is healthy
    assert [k for k, n in nodes.items() if "bad" in n["class"].split()] == [f"dlq:{router_dlq}"]
    # latency per route: p50 and p99 in milliseconds for both routes
    # latency per route: p50 and p99 (ms) of the newest routed records, commit -> routed
    assert set(routes) == {"cars", "car-updates"}
    for row in routes.values():
        assert int(row["data-samples"]) > 0 and 0 <= float(row["data-p50"]) <= float(row["data-p99"]) < 60_000
        assert f"{row['data-p50']} {row['data-p99']}" in " ".join(row["text"]), row  # shown, not only carried


def test_the_page_says_when_the_pipeline_cannot_be_read(
    chromium: str, stack: Any, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """PostgreSQL does not answer (the connection points at a closed port): the server stays up,
    /api/status is the error document ``status --watch`` prints, refreshed, and the page says why."""
    name = unique_name("dash-down").replace("-", "_")
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        f"raw_topic: {{name: raw-{name}}}\nreplication: {{slot: s_{name}, publication: p_{name}}}\n"
        "tables: {car_entities: {entity_type: Car}}\n"
    )
    down = {"CDCROUTER_POSTGRES__PORT": str(free_port())}
    args = ["--pipeline", str(pipeline), "--interval", "0.3", "--refresh", "0.5"]
    with dashboard(stack.state_dir, *args, env=down) as url:
        first = status_until(url, lambda d: "error" in d)
        second = status_until(url, lambda d: d["generated_at"] != first["generated_at"])  # it goes on
        dom = browse(chromium, url, tmp_path / "profile", "--dump-dom")
    for doc in (first, second):
        assert sorted(doc) == ["error", "generated_at", "healthy", "version"] and doc["healthy"] is False
        assert "PostgreSQL" in doc["error"]["message"], doc
    page = Page()
    page.feed(dom)
    text = " ".join(page.text)
    assert "cannot read the pipeline" in text and "PostgreSQL" in text and "unhealthy" in text
    assert '<section id="error">' in dom  # shown, not hidden


def test_a_lost_routing_job_and_a_missing_topic_are_drawn_red(
    status_env: StatusEnv, chromium: str, stack: Any, tmp_path: Path
) -> None:
    """Routing on Flink whose JobManager does not answer, and a filter whose topic nobody created:
    both are problems of the status document and both nodes are drawn red; the rest is not."""
    import json

    env = status_env
    state = tmp_path / "state"  # the running stack's endpoints, plus one recorded Flink deployment
    (state / "deploy").mkdir(parents=True)
    for name in ("endpoints.json", "secrets/postgres-password"):
        if (Path(stack.state_dir) / name).is_file():
            (state / name).parent.mkdir(exist_ok=True)
            shutil.copy(Path(stack.state_dir) / name, state / name)
    (state / "deploy" / "flink-routing.json").write_text(json.dumps({"name": "routing", "job_id": "x"}))
    missing = f"{env.name}-never-created"
    env.filters_file.write_text(
        env.filters_file.read_text()
        + f"  - {{id: vans, consumerId: fleet, outputTopic: {missing}, enabled: true, conditions: "
        "[{field: 'eventBody.entities[0].entityType', operator: equals, value: Van}]}\n"
    )
    closed = {"CDCROUTER_FLINK__REST_URL": f"http://127.0.0.1:{free_port()}"}
    args = ["--raw-topic", env.raw, "--filters", str(env.filters_file), "--interval", "0.5"]
    with dashboard(state, *args, env=closed) as url:
        doc = status_until(url, lambda d: "problems" in d)
        dom = browse(chromium, url, tmp_path / "profile", "--dump-dom")
    # the oracle for what is wrong: the status document's problems (checked against the world by
    # test_status_cli's test of the same set-up)
    assert {(p["code"], p["where"]) for p in doc["problems"]} == {
        ("job_not_running", "flink:routing"),
        ("topic_missing", missing),
    }
    page = Page()
    page.feed(dom)
    nodes = page.found["g"]
    red = {k for k, n in nodes.items() if "bad" in n["class"].split()}
    assert red == {"job:flink:routing", f"topic:{missing}"}, red
    assert "job UNREACHABLE" in "".join(nodes["job:flink:routing"]["text"])
    assert "TOPIC MISSING" in "".join(nodes[f"topic:{missing}"]["text"])
    assert {f"topic:{t}" for t in env.topics} <= set(nodes)  # the healthy ones are drawn too
