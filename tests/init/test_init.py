"""`cdcrouter init`: starter files from a real database (five tables of different shapes) and from
the sample domain; they validate, and capture runs with the generated pipeline.yaml."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from ruamel.yaml import YAML

from cdcrouter.backends.ruletests import run_rule_tests
from cdcrouter.capture import load_pipeline, pipeline_from_dict
from cdcrouter.cli.main import main
from cdcrouter.config import Connections, load_connections
from cdcrouter.filters import validate_file

sys.path.insert(0, str(Path(__file__).parents[1] / "capture"))
from capture_helpers import CaptureRun, drop_capture_objects

pytestmark = pytest.mark.integration

FILES = ("pipeline.yaml", "filters.yaml", "rules-tests.yaml", "cdcrouter.yaml")
SHAPES = """
CREATE TABLE accounts (id int PRIMARY KEY, name text NOT NULL);
CREATE UNIQUE INDEX accounts_name ON accounts (name);
ALTER TABLE accounts REPLICA IDENTITY USING INDEX accounts_name;
CREATE TABLE order_lines (order_id int, line_no int, qty int, PRIMARY KEY (order_id, line_no));
ALTER TABLE order_lines REPLICA IDENTITY NOTHING;
CREATE TABLE audit_log (msg text, at timestamptz DEFAULT now());
CREATE TABLE measurements (id int, region text, value numeric, PRIMARY KEY (id, region))
    PARTITION BY LIST (region);
CREATE TABLE measurements_eu PARTITION OF measurements FOR VALUES IN ('eu');
CREATE TABLE measurements_us PARTITION OF measurements FOR VALUES IN ('us');
CREATE TABLE profiles (id text PRIMARY KEY, name text, data jsonb,
                       name_upper text GENERATED ALWAYS AS (upper(name)) STORED);
"""


@pytest.fixture
def shapes(stack: Any, unique_name: Callable[[str], str]) -> Iterator[tuple[Connections, str]]:
    conns: Connections = stack.connections
    schema = unique_name("init").replace("-", "_")
    with psycopg.connect(conns.postgres.conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
        conn.execute(f"SET search_path TO {schema}".encode())
        conn.execute(SHAPES.encode())
    yield conns, schema
    with psycopg.connect(conns.postgres.conninfo(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())


def _dsn(conns: Connections) -> str:
    pg = conns.postgres
    secret = pg.password.get_secret_value() if pg.password else ""
    return f"postgresql://{pg.user}:{quote(secret, safe='')}@{pg.host}:{pg.port}/{pg.dbname}"


def _yaml(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


def _check_valid(out: Path) -> None:
    """The generated files pass the same checks as `cdcrouter validate` and `cdcrouter test`."""
    assert validate_file(out / "filters.yaml") == []
    run = run_rule_tests(out / "rules-tests.yaml", None)
    assert run.failed == 0 and run.passed >= 2
    assert main(["validate", str(out / "filters.yaml")]) == 0
    assert main(["test", str(out / "rules-tests.yaml")]) == 0


def test_init_from_postgres_five_shapes(
    shapes: tuple[Connections, str],
    stack: Any,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conns, schema = shapes
    out = tmp_path / "proj"
    assert main(["init", "--from-postgres", _dsn(conns), "--schema", schema, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "audit_log: no primary key" in err

    # the password of the DSN is in no file: cdcrouter.yaml has the ${PGPASSWORD} placeholder
    secret = conns.postgres.password.get_secret_value() if conns.postgres.password else None
    assert secret and len(secret) >= 8
    for name in FILES:
        assert secret not in (out / name).read_text(), name
    config_text = (out / "cdcrouter.yaml").read_text()
    assert 'password: "${PGPASSWORD}"' in config_text

    # pipeline.yaml: capturable tables with their primary keys, partitions not listed
    raw = (out / "pipeline.yaml").read_text()
    assert max(len(line) for line in raw.splitlines()) <= 110
    text = " ".join(line.strip(" #") for line in raw.splitlines())  # comments unwrapped
    doc = _yaml(out / "pipeline.yaml")
    assert doc["schema"] == schema
    tables = doc["tables"]
    assert set(tables) == {"accounts", "order_lines", "measurements", "profiles"}
    assert tables["accounts"] == {"entity_type": "Account", "entity_id": "id"}
    assert tables["order_lines"] == {"entity_type": "OrderLine", "entity_id": ["order_id", "line_no"]}
    assert tables["measurements"]["entity_id"] == ["id", "region"]
    assert "measurements_eu" not in tables and "measurements_us" not in tables
    assert tables["profiles"] == {"entity_type": "Profile", "entity_id": "id"}
    # warnings and notes, as comments next to their table
    assert (
        "  # audit_log:\n" in raw
        and "WARNING: no primary key" in text
        and "add a PRIMARY KEY to audit_log" in text
    )
    assert "captured via its root (partitions: measurements_eu, measurements_us)" in text
    assert "WARNING: generated columns (name_upper) are not captured" in text
    assert "JSON columns data: flattened into dotted keys (data.<key>)" in text
    assert "REPLICA IDENTITY NOTHING: capture sets REPLICA IDENTITY FULL itself" in text
    assert "accounts has REPLICA IDENTITY USING INDEX: capture replaces it with FULL" in text
    pipeline = load_pipeline(out / "pipeline.yaml")
    assert pipeline.entity_type("order_lines") == "OrderLine"

    filters = _yaml(out / "filters.yaml")["filters"]
    assert {f["outputTopic"] for f in filters} == {
        "filtered-account-events",
        "filtered-order-line-events",
        "filtered-measurement-events",
        "filtered-profile-events",
    }
    _check_valid(out)

    # cdcrouter.yaml resolves to the same server once PGPASSWORD is exported
    monkeypatch.setenv("PGPASSWORD", secret)
    resolved = load_connections(config_file=out / "cdcrouter.yaml")
    pg = resolved.postgres
    assert (pg.host, pg.port, pg.dbname, pg.user) == (
        conns.postgres.host,
        conns.postgres.port,
        conns.postgres.dbname,
        conns.postgres.user,
    )
    assert pg.password and pg.password.get_secret_value() == secret

    # end to end: capture runs with the generated pipeline (own topic, slot and publication names)
    name = unique_name("init")
    data = pipeline.model_dump(by_alias=True, exclude={"source_file", "connections"})
    data["raw_topic"] = {**data["raw_topic"], "name": f"raw-{name}", "partitions": 1}
    data["replication"] = {
        **data["replication"],
        "slot": f"s_{name}".replace("-", "_"),
        "publication": f"p_{name}".replace("-", "_"),
    }
    run = CaptureRun(resolved, pipeline_from_dict(data), schema, stack.state_dir)
    try:
        run.start()
        run.sql(
            "INSERT INTO accounts VALUES (1, 'ann')",
            "INSERT INTO order_lines VALUES (7, 1, 3)",
            "UPDATE order_lines SET qty = 4 WHERE order_id = 7",
            "INSERT INTO audit_log (msg) VALUES ('not captured')",
            "INSERT INTO measurements VALUES (5, 'eu', 1.5), (6, 'us', 2.5)",
            """INSERT INTO profiles (id, name, data) VALUES ('p1', 'bo', '{"tier": "gold"}')""",
        )
        events = run.events(expect=6, timeout_s=60)
    finally:
        try:
            run.stop()
        finally:
            drop_capture_objects(resolved, run.pipeline, None)
    seen = sorted(
        (
            e["sourceMetadata"]["table"],
            e["eventBody"]["entities"][0]["entityType"],
            e["eventBody"]["entities"][0]["entityId"],
            e["sourceMetadata"]["operation"],
        )
        for e in events
    )
    assert seen == [
        ("accounts", "Account", "1", "INSERT"),
        ("measurements", "Measurement", "5:eu", "INSERT"),
        ("measurements", "Measurement", "6:us", "INSERT"),
        ("order_lines", "OrderLine", "7:1", "INSERT"),
        ("order_lines", "OrderLine", "7:1", "UPDATE"),
        ("profiles", "Profile", "p1", "INSERT"),
    ]
    profile = next(e for e in events if e["sourceMetadata"]["table"] == "profiles")
    attrs = profile["eventBody"]["entities"][0]["updatedAttributes"]
    assert attrs.get("data.tier") == "gold" and not any(k.startswith("name_upper") for k in attrs)


def test_init_tables_and_force(
    shapes: tuple[Connections, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--tables picks tables; nothing is overwritten without --force; --force overwrites."""
    conns, schema = shapes
    dsn = _dsn(conns)
    base = ["init", "--from-postgres", dsn, "--schema", schema, "--out", str(tmp_path)]
    (tmp_path / "filters.yaml").write_text("# mine\n")
    assert main([*base, "--tables", "accounts"]) == 1
    err = capsys.readouterr().err
    assert "filters.yaml already exists" in err and "--force" in err and "Traceback" not in err
    assert (tmp_path / "filters.yaml").read_text() == "# mine\n"
    assert not (tmp_path / "pipeline.yaml").exists()

    assert main([*base, "--tables", "accounts,profiles", "--force"]) == 0
    assert set(_yaml(tmp_path / "pipeline.yaml")["tables"]) == {"accounts", "profiles"}
    assert "# mine" not in (tmp_path / "filters.yaml").read_text()
    _check_valid(tmp_path)

    # a partition or an unknown table is refused with the tables there are
    capsys.readouterr()
    assert main([*base, "--tables", "measurements_eu", "--force"]) == 1
    err = capsys.readouterr().err
    assert "no table measurements_eu" in err and "hint:" in err and "accounts, audit_log" in err


def test_init_sample_domain(stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a database: the sample domain's tables, entity types and outbox, and valid files."""
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    pipeline = load_pipeline(tmp_path / "pipeline.yaml")
    from cdcrouter.capture.domain import SAMPLE_OUTBOX, SAMPLE_TABLES

    assert set(pipeline.tables) == set(SAMPLE_TABLES)
    for table, spec in SAMPLE_TABLES.items():
        assert pipeline.entity_type(table) == spec["entity_type"]
        assert pipeline.tables[table].entity_id == "id"
    assert pipeline.event_name("loan_payments", "INSERT") == "LoanPaymentSubmitted"
    assert pipeline.outbox is not None and pipeline.outbox.table == SAMPLE_OUTBOX["table"]
    assert "JSON columns loan" in (tmp_path / "pipeline.yaml").read_text()
    _check_valid(tmp_path)
    secret = stack.connections.postgres.password
    for name in FILES:
        assert not secret or secret.get_secret_value() not in (tmp_path / name).read_text()
    assert main(["init"]) == 1  # the second time: the files exist


def test_init_bad_dsn(stack: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A DSN that does not parse, or a server that refuses, is exit 1 with a hint: no traceback,
    no file, and the password never echoed."""
    conns: Connections = stack.connections
    pg = conns.postgres
    cases = [
        "host=h port=5432 password=sup3r-secret-pw dbname",  # not key=value
        f"postgresql://{pg.user}:sup3r-secret-pw@{pg.host}:{pg.port}/{pg.dbname}",  # wrong password
        "postgresql://u:sup3r-secret-pw@127.0.0.1:1/db",  # nothing listens
    ]
    for dsn in cases:
        assert main(["init", "--from-postgres", dsn, "--out", str(tmp_path)]) == 1, dsn
        err = capsys.readouterr().err
        assert "error:" in err and "hint:" in err and "Traceback" not in err, err
        assert "sup3r-secret-pw" not in err
    assert list(tmp_path.iterdir()) == []
    # a DSN without --from-postgres is a usage error; --out naming a file is a user error
    assert main(["init", "postgresql://u@h/db", "--out", str(tmp_path)]) == 2
    (tmp_path / "afile").write_text("x")
    assert main(["init", "--out", str(tmp_path / "afile")]) == 1
    err = capsys.readouterr().err
    assert "not a directory" in err and "Traceback" not in err
