"""PostgreSQL 15 with logical decoding, from the machine's (or Debian's) binaries.

``initdb`` and ``postgres`` refuse to run as root, so as root they run as the ``postgres`` user
(``Popen(user=...)``: the PID we record is the postmaster itself, not a wrapper). The superuser
``cdcrouter`` gets a password from ``CDCROUTER_STACK_PG_PASSWORD`` or a generated secret file
(``<state>/secrets/postgres-password``, mode 600).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any, ClassVar

from cdcrouter.errors import StackError
from cdcrouter.stack import versions
from cdcrouter.stack.process import as_user
from cdcrouter.stack.service import HOST, Service, StackContext

PG_BIN = Path(f"/usr/lib/postgresql/{versions.POSTGRES_MAJOR}/bin")
SUPERUSER = "cdcrouter"
DATABASE = "cdcrouter"


def _as_postgres() -> str | None:
    return "postgres" if os.geteuid() == 0 else None


def _chown(path: Path, user: str | None) -> None:
    if user:
        pw = pwd.getpwnam(user)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def password(ctx: StackContext) -> str:
    """The superuser password, kept in a secret file (mode 600) that ``cdcrouter.config`` reads.

    The first ``up`` seeds it from ``CDCROUTER_STACK_PG_PASSWORD`` or a random token; initdb
    sets it once, so the file stays the truth for the life of the data dir.
    """
    path = ctx.secrets_dir() / "postgres-password"
    if not path.is_file():
        value = os.environ.get("CDCROUTER_STACK_PG_PASSWORD") or secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
    return path.read_text().strip()


class Postgres(Service):
    name = "postgres"
    version = versions.POSTGRES_MAJOR
    port_keys = ("postgres",)
    start_timeout = 60.0
    stop_signal: ClassVar[int] = signal.SIGINT  # "fast" shutdown: abort sessions, checkpoint, exit

    def run_user(self) -> str | None:
        return _as_postgres()

    def fetch(self, ctx: StackContext) -> None:
        if (PG_BIN / "postgres").is_file():
            return
        pkg = f"postgresql-{versions.POSTGRES_MAJOR}"
        if not ctx.allow_fetch or os.geteuid() != 0 or not shutil.which("apt-get"):
            raise StackError(
                f"PostgreSQL {versions.POSTGRES_MAJOR} is not installed ({PG_BIN}/postgres missing)",
                hint=f"apt-get install {pkg} (as root, `cdcrouter stack fetch` does it)",
            )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", pkg]):
            out = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
            if out.returncode != 0:
                raise StackError(
                    f"{' '.join(argv)} failed: {out.stderr.strip()[-400:]}", hint=f"install {pkg}"
                )

    def data_dir(self, ctx: StackContext) -> Path:
        return ctx.service_dir(self.name) / "data"

    def socket_dir(self, ctx: StackContext) -> Path:
        return ctx.service_dir(self.name) / "run"

    def prepare(self, ctx: StackContext) -> None:
        user = _as_postgres()
        home = ctx.service_dir(self.name)
        data, sock = self.data_dir(ctx), self.socket_dir(ctx)
        for d in (home, sock):
            d.mkdir(parents=True, exist_ok=True)
            _chown(d, user)
        if user:  # postgres must be able to reach its folders through the state dir
            for parent in (ctx.state_dir, *ctx.state_dir.resolve().parents):
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o001)
        if (data / "PG_VERSION").is_file():
            return
        if data.exists():
            shutil.rmtree(data)  # a half-done initdb: start over
        pwfile = home / ".initdb-pw"
        pwfile.write_text(password(ctx) + "\n")
        pwfile.chmod(0o600)
        _chown(pwfile, user)
        try:
            argv = [
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ]
            out = subprocess.run(argv, capture_output=True, text=True, cwd=home, check=False, **as_user(user))  # type: ignore[call-overload]
        finally:
            pwfile.unlink(missing_ok=True)
        if out.returncode != 0:
            raise StackError(
                f"initdb failed for {data}: {out.stderr.strip()[-600:]}",
                hint="see the message; `cdcrouter stack down --purge --only postgres` starts over",
            )
        hba = data / "pg_hba.conf"
        hba.write_text(
            "local all all trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host replication all 127.0.0.1/32 scram-sha-256\n"
        )
        _chown(hba, user)

    def command(self, ctx: StackContext) -> list[str]:
        return [
            str(PG_BIN / "postgres"),
            "-D",
            str(self.data_dir(ctx)),
            "-p",
            str(ctx.port("postgres")),
            "-c",
            f"listen_addresses={HOST}",
            "-c",
            f"unix_socket_directories={self.socket_dir(ctx)}",
            "-c",
            "wal_level=logical",
            "-c",
            "max_replication_slots=20",
            "-c",
            "max_wal_senders=20",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=128MB",
            "-c",
            "fsync=on",
        ]

    def _conninfo(self, ctx: StackContext, dbname: str) -> str:
        return f"host={HOST} port={ctx.port('postgres')} user={SUPERUSER} dbname={dbname} connect_timeout=2"

    def ready(self, ctx: StackContext) -> bool:
        import psycopg

        try:
            with psycopg.connect(self._conninfo(ctx, "postgres"), password=password(ctx)) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def after_start(self, ctx: StackContext) -> None:
        import psycopg

        with psycopg.connect(
            self._conninfo(ctx, "postgres"), password=password(ctx), autocommit=True
        ) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def endpoint(self, ctx: StackContext) -> str:
        return f"postgresql://{SUPERUSER}@{HOST}:{ctx.port('postgres')}/{DATABASE}"

    def connections(self, ctx: StackContext) -> dict[str, Any]:
        return {
            "postgres": {
                "host": HOST,
                "port": ctx.port("postgres"),
                "dbname": DATABASE,
                "user": SUPERUSER,
                "sslmode": "disable",
            }
        }
