"""Differential end-to-end test: the embedded engine and Flink, deployed through the real SQL
Gateway, route the same raw topic into identical filtered topics.

Both read one raw topic (Avro, Confluent wire format, registered schema) with the same filters
(the 20 benchmark filters plus the example filters, so every operator is covered) into their own
copy of each filtered topic. Per filter topic, the decoded records (all fields but
``filterMetadata.filteredAt``) and their keys must be equal as multisets: nothing missing, nothing
extra, nothing doubled. Both Flink sink shapes: one sink table per topic, and one sink whose rows
name their topic (``generate_sql(sink_shape="one-sink")``).
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from cdcrouter.backends.flink_sql import generate_sql
from cdcrouter.deploy.flink_target import FlinkDeployment, FlinkOptions
from cdcrouter.filters import load_filters
from cdcrouter.route.events import bench_filters_yaml, make_event
from route.oracle import expected_routing  # tests/route: the oracle independent of the compiler

from . import support as s

pytestmark = [pytest.mark.integration, pytest.mark.flink]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "filters.yaml"


def filters_file(path: Path, prefix: str) -> list[str]:
    """The benchmark filters plus the example filters, every output topic under ``prefix``."""
    yaml = YAML(typ="safe")
    items = yaml.load(bench_filters_yaml(prefix, 20))["filters"]
    for item in yaml.load(EXAMPLES.read_text())["filters"]:
        item["outputTopic"] = prefix + item["outputTopic"]
        items.append(item)
    buf = io.StringIO()
    YAML().dump({"filters": items}, buf)
    path.write_text(buf.getvalue())
    return sorted({i["outputTopic"] for i in items})


@pytest.mark.parametrize("sink_shape", ["per-topic", "one-sink"])
def test_flink_and_embedded_route_identically(flink_stack, unique_name, tmp_path, sink_shape) -> None:
    from cdcrouter.route.engine import Router, RouterOptions
    from cdcrouter.schemas.registry import RegistryClient, apply_schemas, desired_subjects, plan_schemas
    from cdcrouter.topics import admin_client, apply_topics, plan_topics, topics_for

    conns = flink_stack.connections
    bootstrap, registry = flink_stack.kafka_bootstrap, flink_stack.registry_url
    base = unique_name("diff")
    raw = f"{base}-raw"
    emb_topics = filters_file(tmp_path / "emb.yaml", f"{base}-e-")
    flk_topics = filters_file(tmp_path / "flk.yaml", f"{base}-f-")
    admin = admin_client(conns.kafka.to_librdkafka())
    for path in (tmp_path / "emb.yaml", tmp_path / "flk.yaml"):
        apply_topics(admin, plan_topics(admin, topics_for(path, raw_topic=raw)))
    with RegistryClient(conns.registry.to_client_conf()) as reg:  # the embedded engine's subjects
        apply_schemas(reg, plan_schemas(reg, desired_subjects(raw, emb_topics)))

    # 1,500 events: every non-empty topic still gets 30+ records (all but the two filters no
    # generated event matches); the per-event work is not what this test measures
    events = [make_event(i, seed=3) for i in range(1000)] + s.make_events(500, seed=5)
    # both engines come from one compiler: the oracle reads the YAML itself
    oracle = expected_routing((tmp_path / "emb.yaml").read_text(), events, emb_topics)
    s.produce(bootstrap, raw, registry, events)

    stats = Router(
        tmp_path / "emb.yaml", conns, RouterOptions(raw_topic=raw, group_id=f"{base}-g", reload=False)
    ).run(max_events=len(events), idle_timeout_s=60)
    assert stats.consumed == len(events)

    name = f"{base}-flink"
    render = s.render({"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "SCHEMA_REGISTRY_URL": registry})
    dep = FlinkDeployment(
        name, flink_stack.sql_gateway_url, flink_stack.flink_rest_url, tmp_path, render,
        FlinkOptions(checkpoint_interval="1s", raw_topic=raw),
    )  # fmt: skip
    decode = s.Decoder(registry)
    try:
        script_text = generate_sql(load_filters(tmp_path / "flk.yaml"), target="flink", sink_shape=sink_shape)
        plan, script = dep.plan(script_text)
        assert (len(script.sinks) == 1) == (sink_shape == "one-sink"), script.sinks
        dep.apply(plan, script)
        # a doubled record fails the multiset comparisons even when it completes a count early
        embedded = s.consume_topics(
            bootstrap, emb_topics, expect=sum(c.total() for c in oracle.values()), idle_s=1.0
        )
        want = sum(len(v) for v in embedded.values())
        flink = s.consume_topics(bootstrap, flk_topics, expect=want, idle_s=1.5)
        for e_topic, f_topic in zip(emb_topics, flk_topics, strict=True):
            e_set, f_set = s.multiset(embedded[e_topic], decode), s.multiset(flink[f_topic], decode)
            missing, extra = e_set - f_set, f_set - e_set
            assert not missing and not extra, (
                f"{e_topic} vs {f_topic}: {sum(missing.values())} only in embedded, "
                f"{sum(extra.values())} only in Flink; first: {next(iter(missing or extra))[:400]}"
            )
        for e_topic in emb_topics:
            got = Counter(decode(v)["eventHeader"]["uuid"] for _, v in embedded[e_topic])
            assert got == oracle[e_topic], f"{e_topic}: the engines agree, not with the oracle"
        assert want > len(events) // 2, f"the filters should route a good share of the events, got {want}"
        assert sum(1 for v in embedded.values() if v) >= len(emb_topics) - 2, "most topics get events"
    finally:
        dep.delete()
        dep.close()
        s.delete_topics(bootstrap, [raw, *emb_topics, *flk_topics])
