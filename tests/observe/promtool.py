"""promtool for the alert-rule tests: on PATH, else taken from Debian's ``prometheus`` package.

Only the promtool binary is extracted (``apt-get download`` + ``dpkg-deb -x``) into a user cache:
installing the package would also install, and on a systemd machine start, a Prometheus server.
On a fresh machine the package lists are refreshed first (as root, like the stack's PostgreSQL).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cdcrouter" / "promtool"
HINT = "apt-get install prometheus (Debian ships promtool in it), or put promtool on PATH"


def find_promtool() -> tuple[str | None, str]:
    """(path to a working promtool, or None with why not)."""
    for candidate in (shutil.which("promtool"), str(CACHE / "promtool")):
        if candidate and _works(candidate):
            return candidate, ""
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        return None, f"promtool not found and no apt-get/dpkg-deb to fetch it: {HINT}"
    why = _fetch()
    if why:
        return None, why
    fetched = str(CACHE / "promtool")
    return (fetched, "") if _works(fetched) else (None, f"the promtool fetched into {CACHE} does not run")


def _works(path: str) -> bool:
    try:
        done = subprocess.run([path, "--version"], capture_output=True, timeout=30, check=False)
        return done.returncode == 0
    except OSError:
        return False


def _fetch() -> str:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # apt's sandbox user writes the download here

        def download() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["apt-get", "download", "-q", "prometheus"],
                cwd=tmp, capture_output=True, text=True, env=env, timeout=600, check=False,
            )  # fmt: skip

        out = download()
        if out.returncode != 0 and os.geteuid() == 0:  # a fresh machine: no package lists yet
            update = ["apt-get", "update", "-q"]
            subprocess.run(update, capture_output=True, env=env, timeout=600, check=False)
            out = download()
        debs = list(Path(tmp).glob("prometheus_*.deb"))
        if out.returncode != 0 or not debs:
            return f"apt-get download prometheus failed: {(out.stderr or out.stdout).strip()[-400:]}; {HINT}"
        root = Path(tmp) / "root"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], check=True, timeout=300)
        CACHE.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / "usr" / "bin" / "promtool", CACHE / "promtool")
    return ""
