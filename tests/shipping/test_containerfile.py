"""The Containerfile: linted with hadolint (installed from PyPI by tests/shipping/tools.py), and
the facts the image promises checked on the file: a build stage with the Rust toolchain, a final
stage with no compiler that runs as a non-root user with ``cdcrouter`` as its entrypoint, and a
build context that has what the wheel needs and none of the local state.

Building the image needs base images from a container registry, which this machine cannot reach
(docs/operations.md, "Run on Kubernetes"), so no test builds it here.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path

from . import tools

REPO = Path(__file__).resolve().parents[2]
CONTAINERFILE = REPO / "Containerfile"


def stages() -> list[list[str]]:
    """The Containerfile's instructions (continuations joined), split into stages at FROM."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    out: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            out.append([])
        out[-1].append(line)
    return out


def test_hadolint_passes() -> None:
    done = subprocess.run(
        [str(tools.hadolint()), "--no-color", str(CONTAINERFILE)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_can_fail(tmp_path: Path) -> None:
    """The linter is live: an unpinned apt-get install and root at run time are reported."""
    bad = tmp_path / "Containerfile"
    bad.write_text("FROM docker.io/library/python:3.11-slim-bookworm\nRUN apt-get install -y gcc\n")
    done = subprocess.run([str(tools.hadolint()), "--no-color", str(bad)], capture_output=True, text=True)
    assert done.returncode == 1
    assert "DL3008" in done.stdout  # pin versions in apt-get install


def test_build_stage_compiles_the_wheel_and_the_final_stage_has_no_compiler() -> None:
    build, final = stages()
    assert " AS build" in build[0]
    assert any("pip wheel" in line and "--wheel-dir /wheels" in line for line in build)
    final_text = "\n".join(final)
    assert "COPY --from=build /wheels" in final_text
    assert "--no-index" in final_text  # installs only the wheels built in stage 1
    for tool in ("cargo", "rustc", "gcc", "build-essential", "apt-get install"):
        assert tool not in final_text, tool
    assert final[0].startswith("FROM docker.io/library/python:3.11-slim")


def test_final_stage_runs_cdcrouter_as_a_non_root_user() -> None:
    final = stages()[-1]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert 'ENTRYPOINT ["cdcrouter"]' in final
    # the chart runs the same uid: runAsNonRoot needs a numeric USER to verify it
    assert users[-1].split(":")[0].isdigit()
    values = (REPO / "deploy" / "helm" / "cdcrouter" / "values.yaml").read_text()
    assert f"runAsUser: {users[-1].split(':')[0]}" in values


def test_build_context_has_what_the_wheel_needs_and_no_local_state() -> None:
    copied = [line.split()[1:-1] for line in stages()[0] if line.startswith("COPY ")]
    sources = {src for srcs in copied for src in srcs}
    # what setuptools needs to build the wheel: pyproject, its readme, the package, the Rust codec
    # and what MANIFEST.in includes
    needed = {"pyproject.toml", "README.md", "src", "native", "MANIFEST.in"}
    for line in (REPO / "MANIFEST.in").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] in ("include", "recursive-include", "graft"):
            needed |= {p.split("/")[0] for p in parts[1:] if not p.startswith("*")}
    assert needed <= sources, needed - sources
    for ignore_file in (".containerignore", ".dockerignore"):
        patterns = [
            p.strip()
            for p in (REPO / ignore_file).read_text().splitlines()
            if p.strip() and not p.startswith("#")
        ]
        for src in sources:
            assert not any(fnmatch.fnmatch(src, p) for p in patterns), f"{ignore_file} drops {src}"
        # the local stack's state (secret files) and build outputs never enter the context
        for private in (".cdcrouter", ".venv", ".git", "native/target"):
            assert private in patterns, f"{ignore_file}: {private}"
    assert (REPO / ".containerignore").read_text() == (REPO / ".dockerignore").read_text()
