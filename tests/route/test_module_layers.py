"""Unit: topics-as-code does not import the router, and the default raw topic is named once.

``topics`` imported the router's engine for the raw topic's default name and the router's DLQ name,
while the router's tools import ``topics``: a cycle. Both names live in ``cdcrouter.naming`` now.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cdcrouter

SRC = Path(cdcrouter.__file__).parent


def test_topics_as_code_does_not_import_the_router() -> None:
    probe = (
        "import sys\n"
        "from cdcrouter.topics import topics_for\n"
        "specs = topics_for(None, filters_text='filters: []\\n')\n"
        "assert [s.name for s in specs] == ['raw-business-events', 'raw-business-events.router.dlq'], specs\n"
        "print(sorted(m for m in sys.modules if m.startswith('cdcrouter.route')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_default_raw_topic_is_defined_once() -> None:
    literal = re.compile(r"""^\s*[A-Z_]+\s*(?::\s*str\s*)?=\s*["']raw-business-events["']""", re.M)
    places = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if literal.search(p.read_text())]
    assert places == ["naming.py"]
