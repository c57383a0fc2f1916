"""What cdcrouter remembers about a deployment that the service itself cannot tell us.

A running Flink job tells us its name (which carries the deployment name and SQL hash), so that
part is derived from the service. What is lost once a job stops is kept here: the savepoint a
stop produced and the unrendered script to resume it with. No secrets: the script keeps its
``${PLACEHOLDER}`` connection settings.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any


def _path(state_dir: Path, target: str, name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return state_dir / "deploy" / f"{target}-{safe}.json"


def load(state_dir: Path, target: str, name: str) -> dict[str, Any] | None:
    p = _path(state_dir, target, name)
    return dict(json.loads(p.read_text())) if p.is_file() else None


def save(state_dir: Path, target: str, name: str, data: dict[str, Any]) -> Path:
    p = _path(state_dir, target, name)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, p)
    return p


def remove(state_dir: Path, target: str, name: str) -> None:
    _path(state_dir, target, name).unlink(missing_ok=True)
