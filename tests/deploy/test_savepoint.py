"""Reading Kafka source positions out of a savepoint's ``_metadata`` (format as Flink 2.2 writes it)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from cdcrouter.deploy.savepoint import format_specific_offsets, local_path, source_offsets
from cdcrouter.errors import DeployError


def split(topic: str, partition: int, offset: int) -> bytes:
    name = topic.encode()
    return struct.pack(">H", len(name)) + name + struct.pack(">iqq", partition, offset, -9223372036854775808)


def test_reader_offsets_win_over_enumerator_sentinels(tmp_path: Path) -> None:
    sp = tmp_path / "savepoint-1"
    sp.mkdir()
    blob = b"\x00junk" + split("raw", 0, -3) + split("raw", 1, -3)  # enumerator: COMMITTED sentinel
    blob += b"\x00\x28" + split("raw", 1, 151) + b"\x00\x28" + split("raw", 0, 149) + split("raw-other", 0, 7)
    (sp / "_metadata").write_bytes(blob)
    assert source_offsets(f"file:{sp}", "raw") == {0: 149, 1: 151}
    assert source_offsets(f"file://{sp}", "raw-other") == {0: 7}
    assert source_offsets(f"file:{sp}", "absent") is None
    (sp / "_metadata").write_bytes(split("raw", 0, -3))
    assert source_offsets(f"file:{sp}", "raw") == {}  # read nothing yet: start at the beginning
    assert format_specific_offsets({1: 151, 0: 149}) == "partition:0,offset:149;partition:1,offset:151"


def test_remote_savepoints_are_refused() -> None:
    with pytest.raises(DeployError, match="not on a local file system"):
        local_path("s3://bucket/savepoints/x")
