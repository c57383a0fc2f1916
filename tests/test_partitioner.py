"""Every cdcrouter producer partitions keyed records like the Java client (and so Flink, Kafka
Streams, Debezium): one entity's events share a partition whoever writes them.

The oracle is the real Java client: the Kafka jars of the stack's cache run
``BuiltInPartitioner.partitionForKey`` (the default partitioner's choice for a non-null key) in a
tiny Java program. cdcrouter's side is a real librdkafka producer built from the shared
``producer_conf()``, writing to real topics, partitions read from the broker's acknowledgements.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from cdcrouter.consumer._kafka import ensure_topic
from cdcrouter.stack.service import default_cache_dir
from cdcrouter.stack.versions import KAFKA
from cdcrouter.topics import delete_topics

SRC = Path(__file__).resolve().parents[1] / "src" / "cdcrouter"
PARTITION_COUNTS = (2, 3, 7, 12)

JAVA = """
import org.apache.kafka.clients.producer.internals.BuiltInPartitioner;
import java.io.*;
import java.util.HexFormat;

public class JavaPartitions {
    public static void main(String[] args) throws IOException {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        for (String line; (line = in.readLine()) != null; ) {
            byte[] key = HexFormat.of().parseHex(line.trim());
            StringBuilder out = new StringBuilder();
            for (String n : args) {
                out.append(BuiltInPartitioner.partitionForKey(key, Integer.parseInt(n))).append(' ');
            }
            System.out.println(out.toString().trim());
        }
    }
}
"""


def _keys() -> list[bytes]:
    """Entity ids of the shapes cdcrouter writes, plus UUIDs, non-ASCII and odd lengths (murmur2
    hashes 4 bytes at a time and then a 1-3 byte tail)."""
    keys = [f"L-{i}".encode() for i in range(120)]
    keys += [str(uuid.UUID(int=i * 7919 + 1)).encode() for i in range(60)]
    keys += ["Prêt-Ω-€".encode(), b"\x00", b"\xff\xfe\xfd", b"a" * 257, b"ab", b"abc", b"abcd", b"abcde"]
    return keys


def _java_partitions(keys: list[bytes], workdir: Path) -> list[list[int]]:
    """Per key, the partition the Java client picks for each of ``PARTITION_COUNTS``."""
    lib = default_cache_dir() / f"kafka-{KAFKA}" / "lib"
    if not any(lib.glob("kafka-clients-*.jar")) or shutil.which("java") is None:
        pytest.skip(f"no Java or no kafka-clients jar in {lib} (cdcrouter stack fetch)")
    program = workdir / "JavaPartitions.java"
    program.write_text(JAVA)
    proc = subprocess.run(
        ["java", "-cp", f"{lib}/*", str(program), *map(str, PARTITION_COUNTS)],
        input="\n".join(k.hex() for k in keys) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = [[int(x) for x in line.split()] for line in proc.stdout.splitlines()]
    assert len(out) == len(keys)
    return out


@pytest.mark.integration
def test_producer_conf_partitions_keys_like_the_java_client(stack, unique_name, tmp_path) -> None:
    conns = stack.connections
    keys = _keys()
    java = _java_partitions(keys, tmp_path)
    topics = {n: f"{unique_name('partitioner')}-{n}" for n in PARTITION_COUNTS}
    try:
        for n, topic in topics.items():
            ensure_topic(conns, topic, n)
        producer = Producer(conns.kafka.producer_conf())
        acked: dict[tuple[str, bytes], int] = {}

        def on_delivery(err, msg) -> None:
            assert err is None, err
            acked[(msg.topic(), msg.key())] = msg.partition()

        for topic in topics.values():
            for key in keys:
                producer.produce(topic, key=key, value=b"v", on_delivery=on_delivery)
        assert producer.flush(60) == 0
        ours = [[acked[(topics[n], key)] for n in PARTITION_COUNTS] for key in keys]
        mismatches = [(k, o, j) for k, o, j in zip(keys, ours, java, strict=True) if o != j]
        assert not mismatches, f"{len(mismatches)} keys differ from the Java client, e.g. {mismatches[:3]}"
        assert len({row[-1] for row in java}) == PARTITION_COUNTS[-1]  # the keys reach every partition
    finally:
        delete_topics(conns, list(topics.values()))


def test_every_producer_is_built_from_the_shared_producer_conf() -> None:
    """A producer built from its own dict would fall back to librdkafka's CRC32 partitioner."""
    # lanes.py builds each lane's producer from the conf route/setup.py makes with producer_conf();
    # capture/sink.py builds its fused lanes from self._conf, made with producer_conf() (asserted
    # below); stack/warmup.py's producer only warms a broker's JIT, on a topic it deletes after
    built_elsewhere = {"route/lanes.py", "capture/sink.py", "stack/warmup.py"}
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Producer":
                args = "".join(ast.get_source_segment(text, a) or "" for a in node.args)
                if "producer_conf" not in args and rel not in built_elsewhere:
                    offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, f"producers not built from producer_conf(): {offenders}"
    assert "**self.conns.kafka.producer_conf()" in (SRC / "route" / "setup.py").read_text()
    assert "**conns.kafka.producer_conf()" in (SRC / "capture" / "sink.py").read_text()
