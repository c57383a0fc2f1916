"""The text of the files ``cdcrouter init`` writes. Written by hand rather than dumped, so each
table carries its comments (JSON columns, warnings) next to it; every file is checked by the
tests with the same loaders the commands use."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

from cdcrouter.scaffold.discover import Scaffold, TableFacts

PIPELINE, FILTERS, RULE_TESTS, CONFIG = "pipeline.yaml", "filters.yaml", "rules-tests.yaml", "cdcrouter.yaml"
FILE_NAMES = (PIPELINE, FILTERS, RULE_TESTS, CONFIG)
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/-]*$")


def _s(value: str) -> str:
    """A YAML scalar: plain when safe, else a JSON (= YAML double-quoted) string."""
    return (
        value
        if _PLAIN.match(value) and value.lower() not in ("yes", "no", "on", "off", "null", "true", "false")
        else json.dumps(value)
    )


def _kebab(entity_type: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", entity_type).lower()


def _comment(text: str) -> list[str]:
    """A table's note as comment lines a reader need not scroll sideways for."""
    return ["  # " + line for line in textwrap.wrap(text, 96, subsequent_indent="  ", break_on_hyphens=False)]


def existing_files(out: Path) -> list[Path]:
    return [out / name for name in FILE_NAMES if (out / name).exists()]


def write_files(scaffold: Scaffold, out: Path) -> list[Path]:
    """Write the four files into ``out`` (created if missing); the caller checks overwrites."""
    out.mkdir(parents=True, exist_ok=True)
    texts = {
        PIPELINE: pipeline_text(scaffold),
        FILTERS: filters_text(scaffold),
        RULE_TESTS: rule_tests_text(scaffold),
        CONFIG: config_text(scaffold),
    }
    paths = []
    for name, text in texts.items():
        (out / name).write_text(text)
        paths.append(out / name)
    return paths


def _table_block(t: TableFacts) -> list[str]:
    lines = [line for w in t.notes for line in _comment(w)]
    lines += [line for w in t.warnings for line in _comment("WARNING: " + w)]
    body = [f"entity_type: {_s(t.entity_type)}"]
    if t.entity_id:
        ids = t.entity_id
        body.append(
            f"entity_id: {_s(ids[0])}" if len(ids) == 1 else f"entity_id: [{', '.join(map(_s, ids))}]"
        )
        body[-1] += "   # the primary key"
    else:
        body.append("entity_id: <columns that identify a row>")
    if t.json_columns:
        flat = ", ".join(f"{c}.<key>" for c in t.json_columns)
        body.append(f"# JSON columns {', '.join(t.json_columns)}: flattened into dotted keys ({flat})")
    if t.events:
        body.append("events: {" + ", ".join(f"{k}: {_s(v)}" for k, v in t.events.items()) + "}")
    if t.exclude:
        body.append(f"exclude_columns: [{', '.join(map(_s, t.exclude))}]   # unsupported types")
    prefix = "  " if t.capturable else "  # "
    lines.append(f"{prefix}{t.name}:")
    lines += [f"{prefix}  {b}" for b in body]
    return lines


def pipeline_text(sc: Scaffold) -> str:
    lines = [
        "# cdcrouter capture pipeline, written by `cdcrouter init`",
        f"# from {sc.source}, schema {sc.schema}.",
        "# Run: cdcrouter capture run --pipeline pipeline.yaml   (connections: cdcrouter.yaml)",
        "# Every key and its default: examples/pipeline.yaml; docs/capture.md.",
        "",
        f"schema: {_s(sc.schema)}",
        "",
        "raw_topic:",
        "  name: raw-business-events       # created by `capture run` (auto-create is off)",
        "  partitions: 3",
        "  replication_factor: 1",
        "  retention_ms: 604800000         # 7 days",
        "",
        "replication:",
        "  slot: cdcrouter_slot",
        "  publication: cdcrouter_pub",
        "  snapshot: initial               # existing rows first (operation SNAPSHOT), then changes",
        "  replica_identity: full          # cdcrouter sets REPLICA IDENTITY FULL: exact changed columns",
        "",
        "tables:",
    ]
    for name in sc.skipped:
        lines.append(
            f"  # WARNING: table {json.dumps(name)} is left out: pipeline.yaml names tables by lower-case "
            "identifiers; rename it to capture it"
        )
    for t in sc.tables:
        lines += _table_block(t)
    if not sc.captured:
        lines.append("  {}   # nothing capturable yet: see the warnings above")
    if sc.outbox:
        lines += [
            "",
            "outbox:                           # events the application writes itself",
            f"  table: {sc.outbox}",
        ]
    return "\n".join(lines) + "\n"


def _filters(sc: Scaffold) -> list[tuple[str, str, str]]:
    """(filter id, entity type, output topic) per entity type of the captured tables."""
    out: dict[str, tuple[str, str, str]] = {}
    for t in sc.captured:
        kebab = _kebab(t.entity_type)
        out.setdefault(t.entity_type, (f"{kebab}-events", t.entity_type, f"filtered-{kebab}-events"))
    return list(out.values())


def filters_text(sc: Scaffold) -> str:
    lines = [
        "# Starter routing rules, written by `cdcrouter init`: one filter per entity type, each sending",
        "# its events to filtered-<entity>-events. Edit the conditions; reference: docs/filter-language.md.",
        "# Check: cdcrouter validate filters.yaml; test: cdcrouter test rules-tests.yaml",
    ]
    filters = _filters(sc)
    if not filters:
        return "\n".join([*lines, "filters: []"]) + "\n"
    lines.append("filters:")
    for fid, entity, topic in filters:
        kebab = _kebab(entity)
        lines += [
            f"  - id: {fid}",
            f"    name: {_s(entity + ' events')}",
            f"    consumerId: {kebab}-consumer",
            f"    outputTopic: {topic}",
            "    enabled: true",
            "    conditions:",
            "      - field: eventBody.entities[0].entityType",
            "        operator: equals",
            f"        value: {_s(entity)}",
        ]
    return "\n".join(lines) + "\n"


def rule_tests_text(sc: Scaffold) -> str:
    lines = [
        "# Rule tests for filters.yaml, written by `cdcrouter init`: run `cdcrouter test rules-tests.yaml`.",
        "# Each case is an event and the exact set of topics it must reach.",
        "filters: filters.yaml",
        "cases:",
    ]
    for _fid, entity, topic in _filters(sc):
        t = next(t for t in sc.captured if t.entity_type == entity)
        lines += [
            f"  - name: {_s(f'a {entity} change goes to {topic}')}",
            "    event:",
            f"      eventHeader: {{eventName: {_s(entity + 'Updated')}}}",
            "      eventBody:",
            f'        entities: [{{entityType: {_s(entity)}, entityId: "1"}}]',
            f"      sourceMetadata: {{table: {_s(t.name)}, operation: UPDATE}}",
            f"    expect: [{topic}]",
        ]
    lines += [
        "  - name: an event of another entity type goes nowhere",
        "    event:",
        "      eventHeader: {eventName: SomethingElseUpdated}",
        "      eventBody:",
        '        entities: [{entityType: SomethingElse, entityId: "1"}]',
        "    expect: []",
    ]
    return "\n".join(lines) + "\n"


def config_text(sc: Scaffold) -> str:
    """``connections:`` with every secret as a ${ENV} placeholder, never its value."""
    c = sc.connections
    pg, kafka, registry = c.postgres, c.kafka, c.registry
    pg_items = [
        f"host: {_s(pg.host)}",
        f"port: {pg.port}",
        f"dbname: {_s(pg.dbname)}",
        f"user: {_s(pg.user)}",
        f"sslmode: {_s(pg.sslmode)}",
    ]
    lines = [
        "# Where the services are, written by `cdcrouter init` (README: Connections). Secrets are",
        "# ${ENV} placeholders, expanded from the environment when a command runs: export them,",
        "# never write them here.",
        "connections:",
        "  postgres:",
        *[f"    {i}" for i in pg_items],
        ('    password: "${PGPASSWORD}"' if pg.password else '    # password: "${PGPASSWORD}"'),
        "  kafka:",
        f"    bootstrap_servers: {_s(kafka.bootstrap_servers)}",
        f"    security_protocol: {kafka.security_protocol}",
    ]
    if kafka.sasl_mechanism:
        lines.append(f"    sasl_mechanism: {_s(kafka.sasl_mechanism)}")
    if kafka.sasl_username or kafka.sasl_password:
        lines += [
            '    sasl_username: "${KAFKA_SASL_USERNAME}"',
            '    sasl_password: "${KAFKA_SASL_PASSWORD}"',
        ]
    if kafka.ssl_key_password:
        lines.append('    ssl_key_password: "${KAFKA_SSL_KEY_PASSWORD}"')
    lines += ["  registry:", f"    url: {_s(registry.url)}"]
    if getattr(registry, "basic_auth_user_info", None):
        lines.append('    basic_auth_user_info: "${REGISTRY_BASIC_AUTH_USER_INFO}"')
    return "\n".join(lines) + "\n"
