"""The release path: sdist -> wheel built from it -> installed where there is no Rust and no source.

One build per session (``python -m build`` on a clean copy of the tree: the sdist first, then the
wheel from the unpacked sdist, so a file missing from MANIFEST.in fails the build). The wheel goes
into a fresh venv with every ``cargo``/``rustc`` directory taken off PATH, and the installed
``cdcrouter`` runs from a temporary directory holding copies of the examples only: nothing can come
from the source tree.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from route.oracle import expected_routing  # tests/route: the oracle independent of the compiler
from route.routekit import decode_filtered, delete_topics, read_topic, setup_env

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("kafka", "registry")]

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Installed:
    dist: Path
    wheel: Path
    sdist: Path
    venv: Path
    env: dict[str, str]  # PATH without Rust, no PYTHONPATH
    workdir: Path  # outside the repo: copies of examples/ only

    def cdcrouter(self, *args: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / "cdcrouter"), *args],
            cwd=self.workdir,
            env={**self.env, **kw.pop("env", {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            **kw,
        )


def _clean_tree(dest: Path) -> Path:
    """The files a fresh clone has (tracked, or new and not ignored), as they are now in the worktree.

    Building from the worktree itself would hide a MANIFEST.in gap: setuptools also takes every
    file the SOURCES.txt of an old ``src/*.egg-info`` lists (left there by ``pip install -e``)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file():  # (deleted but still tracked: skipped, as in a commit of the worktree)
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _path_without_rust() -> str:
    keep = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    keep = [d for d in keep if not any((Path(d) / tool).exists() for tool in ("cargo", "rustc"))]
    return os.pathsep.join(keep)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    # the build itself needs cargo: rustup's default place may be missing from a non-login PATH
    build_env = {**os.environ, "PATH": os.environ["PATH"] + os.pathsep + str(Path.home() / ".cargo/bin")}
    # cargo's target dir of the source tree (gitignored; `pip install -e .` filled it): the copy's
    # dependencies (pyo3 ...) are already compiled there. The crate itself still compiles from the
    # copy's sources (cargo keys a path crate's artifacts by its path), and the wheel carries that.
    build_env.setdefault("CARGO_TARGET_DIR", str(REPO / "native" / "target"))
    build = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(_clean_tree(root / "src"))],
        env=build_env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    (wheel,) = dist.glob("cdcrouter-*.whl")
    (sdist,) = dist.glob("cdcrouter-*.tar.gz")

    path = _path_without_rust()
    assert shutil.which("cargo", path=path) is None and shutil.which("rustc", path=path) is None
    dropped = ("PYTHON", "CARGO", "RUSTUP", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env["PATH"] = path
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=120)
    # --only-binary: no dependency may fall back to a source build either (it could need a compiler)
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--only-binary", ":all:", str(wheel)]
    res = subprocess.run(pip, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]

    workdir = root / "work"
    shutil.copytree(REPO / "examples", workdir / "examples")
    yield Installed(dist, wheel, sdist, venv, env, workdir)


def test_the_wheel_carries_the_compiled_codec_and_the_sdist_its_sources(installed: Installed) -> None:
    assert not installed.wheel.name.endswith("-none-any.whl"), f"{installed.wheel.name}: not a platform wheel"
    names = zipfile.ZipFile(installed.wheel).namelist()
    assert [n for n in names if n.startswith("cdcrouter/_native.") and n.endswith(".so")], names
    assert "cdcrouter/schemas/raw-business-event.avsc" in names
    assert not [n for n in names if n.startswith(("native/", "tests/"))]
    # test fakes and the pytest plugin stay in the repository (testing/), out of what users install
    assert not [n for n in names if n.startswith(("cdcrouter/testing/", "cdcrouter_testing/", "testing/"))], (
        names
    )
    assert "cdcrouter/bench/route.py" in names  # `cdcrouter bench` ships: users measure their own rules
    with tarfile.open(installed.sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    for rs in (REPO / "native/src").glob("*.rs"):
        assert f"native/src/{rs.name}" in members
    assert {"native/Cargo.toml", "native/Cargo.lock", "pyproject.toml", "MANIFEST.in"} <= members


def test_the_installed_wheel_reports_its_versions_and_builds_sql(installed: Installed) -> None:
    res = installed.cdcrouter("version", "--format", "json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    cargo = tomllib.loads((REPO / "native/Cargo.toml").read_text())
    assert info["cdcrouter"] == pyproject["project"]["version"]
    native = info["native"]
    assert (native["crate"], native["version"]) == (cargo["package"]["name"], cargo["package"]["version"])
    assert native["profile"] == "release"
    assert Path(native["path"]).is_relative_to(installed.venv), native["path"]  # not the source tree's .so
    libs = info["libraries"]
    for name in ("librdkafka", "libpq", "libpq-psycopg2"):
        assert re.fullmatch(r"\d+\.\d+(\.\d+)?", libs[name]), f"{name}: {libs}"
    # the distributions' versions as pip itself reports them in that venv
    listed = subprocess.run(
        [str(installed.venv / "bin/python"), "-m", "pip", "list", "--format", "json"],
        env=installed.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    pip_says = {d["name"].lower(): d["version"] for d in json.loads(listed)}
    for name in ("confluent-kafka", "fastavro", "psycopg", "psycopg2-binary", "pydantic"):
        assert libs[name] == pip_says[name], f"{name}: {libs[name]} vs pip {pip_says[name]}"
    assert libs["apache-flink"] is None  # no [flink] extra asked for
    human = installed.cdcrouter("version")
    assert human.returncode == 0 and human.stdout.startswith(f"cdcrouter {info['cdcrouter']}\n"), human.stdout

    res = installed.cdcrouter("validate", "examples/filters.yaml")
    assert res.returncode == 0, res.stdout + res.stderr
    # the committed SQL was generated from the same relative path: byte for byte the same
    for target in ("flink", "confluent-cloud"):
        args = ["-f", "examples/filters.yaml", "--target", target, "--out", "examples/flink-jobs", "--check"]
        res = installed.cdcrouter("generate", *args)
        assert res.returncode == 0, res.stdout + res.stderr


def test_the_installed_wheel_routes_events_on_the_stack(
    installed: Installed, stack: Any, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    env = setup_env(stack.connections, unique_name, tmp_path, filters=8)
    try:
        events = env.produce(0, 40)
        conn_env = {
            "CDCROUTER_KAFKA__BOOTSTRAP_SERVERS": env.conns.kafka.bootstrap_servers,
            "CDCROUTER_REGISTRY__URL": env.conns.registry.url,
        }
        res = installed.cdcrouter(
            "run",
            "--filters",
            str(env.filters_path),
            "--raw-topic",
            env.raw,
            "--group",
            env.prefix + "g",
            "--instance-id",
            env.prefix + "i",
            "--no-reload",
            "--max-events",
            str(len(events)),
            env=conn_env,
            timeout=180,
        )
        assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
        want = expected_routing(env.filters_path.read_text(), events, env.filtered_topics)
        got = {
            t: Counter(decode_filtered(m.value())["eventHeader"]["uuid"] for m in read_topic(env.kafka(), t))
            for t in env.filtered_topics
        }
        assert got == want
        assert sum(sum(c.values()) for c in want.values()) > 0, "the filters matched nothing: no proof"
    finally:
        delete_topics(env)


@pytest.mark.stack_services("postgres", "kafka", "registry")
def test_the_installed_wheel_runs_the_demo_on_the_stack(installed: Installed, stack: Any) -> None:
    """The README's main job from the wheel alone: `cdcrouter demo` on the running stack (its own
    stack code finds the services already up and leaves them running with --keep)."""
    res = installed.cdcrouter(
        "demo",
        "--changes",
        "300",
        "--rate",
        "0",
        "--timeout",
        "150",
        "--keep",
        "--state-dir",
        str(stack.state_dir),
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    out = res.stdout
    for topic in ("filtered-car-events", "filtered-loan-events", "filtered-service-events"):
        assert topic in out, out[-4000:]
    assert "Raw topic raw-business-events" in out and "Traceback" not in res.stderr, out[-4000:]
