"""The consumer guide's example file, run as users run it, on the real stack."""

from __future__ import annotations

import ast
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from cdcrouter.consumer._kafka import consumer_conf

from .conftest import event

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "consumers" / "minimal.py"
GUIDE = ROOT / "docs" / "consumer-guide.md"


def _code_lines(path: Path) -> int:
    """Lines of user code: not blank, not comments, not the module docstring."""
    tree = ast.parse(path.read_text())
    doc = tree.body[0]
    skip = set(range(doc.lineno, doc.end_lineno + 1)) if isinstance(doc, ast.Expr) else set()
    lines = path.read_text().splitlines()
    return sum(
        1 for i, x in enumerate(lines, 1) if i not in skip and x.strip() and not x.strip().startswith("#")
    )


def test_the_example_is_short_and_is_the_one_in_the_guide() -> None:
    assert _code_lines(EXAMPLE) < 30
    assert EXAMPLE.read_text().strip() in GUIDE.read_text()


@pytest.mark.integration
def test_the_example_consumes_and_stops_cleanly_on_sigterm(conns, topic, produce) -> None:
    src = topic(partitions=2)
    name = f"big-loans-{uuid.uuid4().hex[:8]}"
    produce(
        src,
        [
            event("LoanCreated", "L-1", {"loan.loanAmount": "50000.00"}),
            event("LoanCreated", "L-2", {"loan.loanAmount": "900"}),
            event(
                "LoanPaymentSubmitted",
                "P-1",
                {"loan_id": "L-1", "amount": "120.00"},
                entity_type="LoanPayment",
            ),
        ],
    )
    env = {**os.environ, "LOAN_TOPIC": src, "CONSUMER_NAME": name, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        got = sorted(lines.get(timeout=60).strip() for _ in range(2))
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    assert rc == 0, proc.stderr.read()
    assert got[0].startswith("big loan L-1: 50000.00 (book: ")  # L-2 may come first: another key
    assert got[1].startswith(f"payment of 120.00 on loan L-1 ({src}[")
    # SIGTERM committed everything: the group's offsets reach the end of every partition.
    c = Consumer(consumer_conf(conns, name))
    try:
        committed = c.committed([TopicPartition(src, p) for p in (0, 1)], timeout=10)
        ends = [c.get_watermark_offsets(TopicPartition(src, p), timeout=10)[1] for p in (0, 1)]
    finally:
        c.close()
    assert [max(tp.offset, 0) for tp in committed] == ends  # -1001: nothing to commit (empty partition)
