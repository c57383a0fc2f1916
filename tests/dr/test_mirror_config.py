"""The generated mm2.properties (no processes): what it mirrors, how, and that secrets stay out."""

from __future__ import annotations

import re

from pydantic import SecretStr

from cdcrouter.config.connections import KafkaSettings
from cdcrouter.dr.mirror import MirrorSpec, pipeline_topics, render_properties


def _props(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition(" = ")
            out[key] = value
    return out


def test_properties_mirror_committed_records_with_identity_names_and_group_offsets() -> None:
    topics = pipeline_topics("raw-business-events", ["filtered-loans", "filtered-loans"])
    assert topics == (
        "raw-business-events",
        "raw-business-events.capture-offsets",
        "raw-business-events.capture-dlq",
        "raw-business-events.router.dlq",
        "filtered-loans",
    )
    text, env = render_properties(
        MirrorSpec(KafkaSettings(), KafkaSettings(bootstrap_servers="b:9092"), topics)
    )
    props = _props(text)
    assert env == {}
    assert props["a->b.consumer.isolation.level"] == "read_committed"
    assert props["replication.policy.class"].endswith("IdentityReplicationPolicy")
    assert props["b.exactly.once.source.support"] == "enabled"
    assert props["sync.group.offsets.enabled"] == "true"
    assert props["b->a.enabled"] == "false"
    # each pattern matches its own topic only (a '.' would match any character)
    patterns = [re.compile(p) for p in props["a->b.topics"].split(", ")]
    assert all(any(p.fullmatch(t) for p in patterns) for t in topics)
    assert not any(p.fullmatch("raw-business-eventsXcapture-offsets") for p in patterns)
    assert "\\" not in props["a->b.topics"]  # a Java properties file would eat backslashes


def test_sasl_secrets_go_through_the_environment_not_the_file() -> None:
    source = KafkaSettings(
        bootstrap_servers="a:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="mirror",
        sasl_password=SecretStr('s3cr"et'),
    )
    text, env = render_properties(MirrorSpec(source, KafkaSettings(), ("t",)))
    assert "s3cr" not in text
    props = _props(text)
    assert props["a.sasl.jaas.config"] == "${env:CDCROUTER_MM2_A_JAAS}"
    assert props["config.providers.env.class"].endswith("EnvVarConfigProvider")
    jaas = env["CDCROUTER_MM2_A_JAAS"]
    assert jaas.startswith("org.apache.kafka.common.security.scram.ScramLoginModule required")
    assert 'password="s3cr\\"et";' in jaas


def test_the_gate_finds_the_newest_proven_position_with_few_checks() -> None:
    from cdcrouter.dr.confirm import newest_proven

    for count in range(0, 40):
        for proven_upto in range(-1, count):
            asked: list[int] = []

            def proven(i: int, upto: int = proven_upto, log: list[int] = asked) -> bool:
                log.append(i)
                return i <= upto

            assert newest_proven(count, proven) == proven_upto
            assert len(asked) <= 2 + max(1, count).bit_length()  # not one Kafka scan per position
