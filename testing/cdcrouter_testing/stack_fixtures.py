"""Pytest plugin: the real local stack for integration tests.

Tests ask only for what they need, so unit runs need no JVM::

    def test_x(pg_dsn): ...                       # PostgreSQL only
    def test_y(kafka_bootstrap, kafka_admin): ... # Kafka only
    @pytest.mark.stack_services("connect")        # Connect (+ Kafka, registry)
    def test_z(stack): stack.connect_url ...
    def test_w(stack_with): s = stack_with("postgres", "kafka")
    def test_v(private_kafka): private_kafka.down(["kafka"]) ...  # a broker of its own to restart
    def test_r(region_b): region_b.connections().kafka ...  # the second Kafka region (DR)
    @pytest.mark.pg_versions()                    # once per PostgreSQL major: 15 and 18
    def test_u(pg_stack): pg_stack.pg_dsn ...     # (also private_pg, and capture's capture_run)

Services come up once per session in the shared state dir (``$CDCROUTER_STATE_DIR``, else the
repository's ``.cdcrouter/``); an already-running stack is reused. At the end the session stops
only what it started itself (``CDCROUTER_STACK_KEEP=1`` keeps even that running). In CI
(``CI=true``) a service that cannot start fails the test; elsewhere the test is skipped with the
reason. Several sessions may share one stack: use ``unique_name`` for topics, slots and groups.

A test marked ``pg_versions`` runs once per PostgreSQL major (default :data:`TESTED_PG_VERSIONS`,
or ``CDCROUTER_TEST_PG_VERSIONS``):
the shared stack's own major uses its server, any other major a private server started once per
session (its own state dir and port) and checked to really be that major.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from cdcrouter.errors import CdcrouterError

if TYPE_CHECKING:
    from cdcrouter.config import Connections
    from cdcrouter.stack.manager import Stack

DEFAULT_SERVICES = ("postgres", "kafka", "registry")
# The oldest supported major (Debian 12's) and the newest release: what CI runs capture on.
# CDCROUTER_TEST_PG_VERSIONS=15,16,17,18 runs the marked tests on other majors too.
TESTED_PG_VERSIONS = ("15", "18")


def tested_pg_versions() -> list[str]:
    raw = os.environ.get("CDCROUTER_TEST_PG_VERSIONS", "")
    return [v.strip() for v in raw.split(",") if v.strip()] or list(TESTED_PG_VERSIONS)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@dataclass
class StackHandle:
    """What tests get: the stack's endpoints and a ``Connections`` for them."""

    stack: Stack
    services: frozenset[str]
    connections: Connections

    @property
    def state_dir(self) -> Path:
        return self.stack.state_dir

    @property
    def pg_dsn(self) -> str:
        return self.connections.postgres.conninfo()

    @property
    def kafka_bootstrap(self) -> str:
        return self.connections.kafka.bootstrap_servers

    @property
    def registry_url(self) -> str:
        return self.connections.registry.url

    @property
    def connect_url(self) -> str:
        return self.connections.connect.url

    @property
    def sql_gateway_url(self) -> str:
        return self.connections.flink.sql_gateway_url

    @property
    def flink_rest_url(self) -> str:
        return self.connections.flink.rest_url

    def kafka_conf(self, **extra: Any) -> dict[str, Any]:
        """librdkafka settings for this stack, plus ``extra`` (dots for underscores not needed)."""
        return {**self.connections.kafka.to_librdkafka(), **extra}


@dataclass
class _Session:
    stack: Stack
    ensured: set[str] = field(default_factory=set)
    started: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    topics_before: set[str] | None = None  # the broker's topics when this session first used it
    names: set[str] = field(default_factory=set)  # every unique_name() this session made
    pg_servers: dict[str, Stack] = field(default_factory=dict)  # private servers of other majors
    pg_stops: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    pg_failed: dict[str, BaseException] = field(default_factory=dict)

    def pg_server(self, major: str) -> Stack | None:
        """The server of PostgreSQL ``major``: None for the shared stack's own major, else a private
        one started on first use and stopped at the session's end."""
        from cdcrouter.stack.services.postgres import stack_major

        if major == stack_major(self.stack.ctx):
            return None
        if major in self.pg_failed:  # tried once this session: do not wait for it again per test
            raise self.pg_failed[major]
        if major not in self.pg_servers:
            try:
                self.pg_servers[major] = self.pg_stops.enter_context(
                    private_service("postgres", ("postgres",), pg_version=major)
                )
            except BaseException as exc:  # pytest's skip/fail outcome, with the reason
                self.pg_failed[major] = exc
                raise
        return self.pg_servers[major]

    def ensure(self, names: tuple[str, ...]) -> StackHandle:
        wanted = [s.name for s in self.stack.resolve(names)]
        missing = [n for n in wanted if n not in self.ensured]
        for name in missing:
            if name in self.failed:
                _unavailable(self.failed[name])
        if missing:
            already = {n for n in missing if self.stack.running_record(n)}
            try:
                self.started += self.stack.up(missing)
            except CdcrouterError as exc:
                # up() stopped half-way: what it did start is still ours to stop at the end.
                self.started += [n for n in missing if n not in already and self.stack.running_record(n)]
                reason = f"local stack ({', '.join(missing)}) unavailable: {exc.render()}"
                # only what is not up and healthy failed: Flink not starting must not skip every
                # later Kafka test of the session
                for name in missing:
                    if not self._healthy(name):
                        self.failed[name] = reason
                _unavailable(reason)
            self.ensured.update(wanted)
        handle = StackHandle(self.stack, frozenset(self.ensured), self.stack.connections())
        if "kafka" in self.ensured and self.topics_before is None:
            self.topics_before = _topics(handle.kafka_conf())
        return handle

    def _healthy(self, name: str) -> bool:
        return bool(self.stack.running_record(name)) and self.stack.services[name].ready(self.stack.ctx)

    def delete_new_topics(self) -> None:
        """Delete the topics this session created. Hundreds of them per run made the shared broker
        slower for everything after it (1,248 had piled up on a dev broker). Only topics named after
        this session's ``unique_name``s go: a concurrent session's topics on the same broker stay."""
        if self.topics_before is None or not self.names:
            return
        conns = self.stack.connections()
        ours = {n for name in self.names for n in (name, name.replace("-", "_"))}
        try:
            new = sorted(t for t in _topics(conns.kafka.to_librdkafka()) - self.topics_before)
            new = [t for t in new if not _is_stack_topic(t) and any(n in t for n in ours)]
            if new:
                from cdcrouter.topics import delete_topics

                delete_topics(conns, new)
        except Exception as exc:  # cleaning up must not turn a green run red
            print(f"\ncdcrouter tests: could not delete the run's topics: {exc}")


def _topics(conf: dict[str, Any]) -> set[str]:
    from confluent_kafka.admin import AdminClient

    return set(AdminClient(conf).list_topics(timeout=15).topics)


def _is_stack_topic(name: str) -> bool:
    """Internal topics of Kafka, the registry and Connect: never a test's to delete."""
    return name.startswith(("__", "_schemas", "cdcrouter-connect-"))


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def pytest_configure(config: pytest.Config) -> None:
    # `stack up` warms a just-started broker's JIT for the demo's first latency figures (up to
    # 20 s per broker start); tests do not measure that, and several start or restart brokers.
    # The internal topics are still created; tests/stack/test_warmup.py turns the traffic back on.
    os.environ.setdefault("CDCROUTER_STACK_WARMUP", "0")
    config.addinivalue_line(
        "markers", "stack_services(*names): local stack services the test needs (dependencies are added)"
    )
    config.addinivalue_line(
        "markers",
        "pg_versions(*majors): run the test once per PostgreSQL major (default 15 and 18) through the "
        "pg_version fixture (pg_stack, private_pg and capture_run use it)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("pg_versions")
    if marker is None or "pg_version" not in metafunc.fixturenames:
        return
    majors = [str(m) for m in marker.args] or tested_pg_versions()
    metafunc.parametrize("pg_version", majors, ids=[f"pg{m}" for m in majors], indirect=True)


def _state_dir(config: pytest.Config) -> Path:
    env = os.environ.get("CDCROUTER_STATE_DIR")
    return Path(env) if env else Path(config.rootpath) / ".cdcrouter"


@pytest.fixture(scope="session")
def _stack_session(pytestconfig: pytest.Config) -> Iterator[_Session]:
    from cdcrouter.stack.manager import Stack

    session = _Session(Stack(_state_dir(pytestconfig)))
    yield session
    session.pg_stops.close()
    session.delete_new_topics()
    if session.started and os.environ.get("CDCROUTER_STACK_KEEP", "") not in ("1", "true"):
        session.stack.down(session.started)


@pytest.fixture(scope="session")
def stack_with(_stack_session: _Session) -> Callable[..., StackHandle]:
    """Factory: ``stack_with("postgres", "kafka")`` brings those up (once) and returns the handle."""

    def factory(*names: str) -> StackHandle:
        return _stack_session.ensure(names or DEFAULT_SERVICES)

    return factory


@pytest.fixture
def stack(request: pytest.FixtureRequest, stack_with: Callable[..., StackHandle]) -> StackHandle:
    """The stack with the services of the test's ``stack_services`` marker (default: PostgreSQL,
    Kafka and the registry)."""
    names: list[str] = []
    for marker in request.node.iter_markers("stack_services"):
        names.extend(marker.args)
    return stack_with(*(names or DEFAULT_SERVICES))


@pytest.fixture
def stack_connections(stack: StackHandle) -> Connections:
    return stack.connections


@pytest.fixture
def pg_version(request: pytest.FixtureRequest) -> str | None:
    """The PostgreSQL major this run of the test is for (``pg_versions`` marker); None: unmarked,
    the shared stack's own."""
    return getattr(request, "param", None)


@pytest.fixture
def pg_stack(stack: StackHandle, pg_version: str | None, _stack_session: _Session) -> StackHandle:
    """``stack`` whose PostgreSQL is a server of ``pg_version`` (the shared one for its own major)."""
    if pg_version is None:
        return stack
    server = _stack_session.pg_server(pg_version)
    if server is None:
        handle = stack
    else:
        conns = stack.connections.model_copy(update={"postgres": server.connections().postgres})
        handle = StackHandle(stack.stack, stack.services, conns)
    _check_major(handle.pg_dsn, pg_version)
    return handle


def _check_major(dsn: str, major: str) -> None:
    """Fail unless the server behind ``dsn`` runs ``major``: a test run "on 18" must not quietly
    talk to 15."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        running = conn.info.server_version // 10000
    assert str(running) == major, f"asked for PostgreSQL {major}, the server runs {running}"


@pytest.fixture
def pg_dsn(stack_with: Callable[..., StackHandle]) -> str:
    """A libpq connection string for the stack's ``cdcrouter`` database (superuser)."""
    return stack_with("postgres").pg_dsn


@pytest.fixture
def kafka_bootstrap(stack_with: Callable[..., StackHandle]) -> str:
    return stack_with("kafka").kafka_bootstrap


@pytest.fixture
def registry_url(stack_with: Callable[..., StackHandle]) -> str:
    """The registry's Confluent-compatible base URL (``.../apis/ccompat/v7``)."""
    return stack_with("registry").registry_url


@pytest.fixture
def connect_url(stack_with: Callable[..., StackHandle]) -> str:
    return stack_with("connect").connect_url


@pytest.fixture
def kafka_admin(stack_with: Callable[..., StackHandle]) -> Any:
    """A ``confluent_kafka.admin.AdminClient`` on the stack's Kafka."""
    from confluent_kafka.admin import AdminClient

    return AdminClient(stack_with("kafka").kafka_conf())


@pytest.fixture
def unique_name(request: pytest.FixtureRequest, _stack_session: _Session) -> Callable[[str], str]:
    """``unique_name("orders")`` → ``orders-<test>-<random>``: topic, slot, group and subject names
    that cannot collide between tests or sessions sharing one stack. Lowercase ``[a-z0-9_-]`` only,
    at most 60 characters (replication slot names allow 63, ``[a-z0-9_]``: use ``.replace('-', '_')``)."""
    test = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:24]

    def make(prefix: str = "t") -> str:
        name = f"{prefix}-{test}-{uuid.uuid4().hex[:8]}"[:60]
        _stack_session.names.add(name)
        return name

    return make


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def private_service(
    service: str, port_keys: tuple[str, ...], *, pg_version: str | None = None
) -> Iterator[Stack]:
    """One service of the test's own, which it may stop and restart: free ports, a state dir
    outside pytest's basetemp (a concurrent session resets that to mode 0700, locking the
    ``postgres`` user out). Stopped by its recorded PID and purged at the end, also when it fails
    to start; the shared stack is not touched. ``pg_version`` picks the PostgreSQL major."""
    from cdcrouter.stack.manager import Stack

    scratch = Path(tempfile.mkdtemp(prefix=f"cdcrouter-private-{service}-"))
    own = Stack(scratch / "state", ports={key: _free_port() for key in port_keys}, pg_version=pg_version)
    try:
        own.up([service])
    except Exception as exc:
        with contextlib.suppress(Exception):  # whatever did start is stopped by its PID
            own.down([service], purge=True)
        shutil.rmtree(scratch, ignore_errors=True)
        _unavailable(f"private {service} did not start: {exc}")
    try:
        yield own
    finally:
        own.down([service], purge=True)
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="session")
def region_b(_stack_session: _Session) -> Iterator[Stack]:
    """The second Kafka region (``<state>/region-b``, ports 19092/19093) beside the shared stack,
    for disaster-recovery tests; shared like the stack (use ``unique_name``), stopped at the end
    only if this session started it (and ``CDCROUTER_STACK_KEEP`` is not set)."""
    from cdcrouter.stack.manager import Stack

    _stack_session.ensure(("kafka",))
    other = Stack(_stack_session.stack.state_dir, region="b")
    try:
        started = other.up(["kafka"])
    except CdcrouterError as exc:
        _unavailable(f"region b's Kafka did not start: {exc.render()}")
    yield other
    if started and os.environ.get("CDCROUTER_STACK_KEEP", "") not in ("1", "true"):
        other.down(started)


@pytest.fixture
def private_kafka() -> Iterator[Stack]:
    """A Kafka broker of this test's own (see :func:`private_service`)."""
    with private_service("kafka", ("kafka", "kafka-controller")) as own:
        yield own


@pytest.fixture
def private_pg(pg_version: str | None) -> Iterator[Stack]:
    """A PostgreSQL of this test's own (see :func:`private_service`), of ``pg_version`` if set."""
    with private_service("postgres", ("postgres",), pg_version=pg_version) as own:
        if pg_version:
            _check_major(own.connections().postgres.conninfo(), pg_version)
        yield own
