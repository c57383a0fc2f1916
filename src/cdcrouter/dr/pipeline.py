"""The drill's own pipeline: a table, a slot, a raw topic, two filtered topics and their schemas.

Everything is named after the drill's run id, so a drill never touches a real pipeline and
several drills share one stack. The two filters route every row (``<name>-all``) and the rows
whose value starts with 0-7 (``<name>-half``); which change belongs in which topic is computed
from the row by :meth:`DrillPipeline.expected_topics`, independently of the filter engine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from cdcrouter.config import Connections
from cdcrouter.dr.workload import ENTITY_TYPE, create_table

HALF = "01234567"


@dataclass(frozen=True)
class DrillPipeline:
    """Names and files of one drill's pipeline (``name`` is a Kafka-safe run name)."""

    name: str
    workdir: Path
    schema: str = "cdcrouter_dr"

    @property
    def ident(self) -> str:
        return self.name.replace("-", "_").replace(".", "_")[:50]

    @property
    def table(self) -> str:
        return f"drill_{self.ident}"[:63]

    @property
    def slot(self) -> str:
        return f"dr_{self.ident}"[:63]

    @property
    def raw_topic(self) -> str:
        return f"{self.name}-raw"

    @property
    def all_topic(self) -> str:
        return f"{self.name}-all"

    @property
    def half_topic(self) -> str:
        return f"{self.name}-half"

    @property
    def router_group(self) -> str:
        return f"{self.name}-router"

    @property
    def view_group(self) -> str:
        return f"{self.name}-view"

    @property
    def view_table(self) -> str:
        return f"view_{self.ident}"[:63]

    @property
    def id_prefix(self) -> str:
        return f"{self.name}-"

    @property
    def pipeline_file(self) -> Path:
        return self.workdir / "pipeline.yaml"

    @property
    def filters_file(self) -> Path:
        return self.workdir / "filters.yaml"

    @property
    def filtered_topics(self) -> list[str]:
        return [self.all_topic, self.half_topic]

    def expected_topics(self) -> dict[str, Callable[[str, str], bool]]:
        """Which changes each filtered topic must hold, computed from the row alone."""
        return {self.all_topic: lambda i, v: True, self.half_topic: lambda i, v: v[:1] in HALF}

    # ------------------------------------------------------------------ files and objects

    def write_files(self, pipeline_extra: str = "") -> None:
        """``pipeline_extra``: more top-level YAML for pipeline.yaml (a scenario's ``dr:`` section)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pipeline_file.write_text(
            f"""# written by cdcrouter dr drill
schema: {self.schema}
raw_topic: {{name: {self.raw_topic}, partitions: 3, replication_factor: 1}}
replication: {{slot: {self.slot}, publication: {self.slot}, snapshot: never}}
batching: {{max_ms: 20}}
heartbeat_interval_s: 1
tables:
  {self.table}: {{entity_type: {ENTITY_TYPE}}}
{pipeline_extra}"""
        )
        self.filters_file.write_text(
            f"""# written by cdcrouter dr drill
filters:
  - id: dr-all
    name: every drill row
    consumerId: dr-view
    outputTopic: {self.all_topic}
    enabled: true
    conditions:
      - field: eventBody.entities[0].entityType
        operator: equals
        value: {ENTITY_TYPE}
  - id: dr-half
    name: rows whose value starts with 0-7
    consumerId: dr-half
    outputTopic: {self.half_topic}
    enabled: true
    conditionLogic: AND
    conditions:
      - field: eventBody.entities[0].entityType
        operator: equals
        value: {ENTITY_TYPE}
      - field: eventBody.entities[0].updatedAttributes.val
        operator: matches
        value: "^[0-7]"
"""
        )

    def create_table(self, conns: Connections) -> None:
        create_table(conns.postgres.conninfo(), self.schema, self.table)

    def create_topics_and_schemas(self, conns: Connections) -> None:
        """Topics (raw, filtered, dead-letter) and the registry subjects, on ``conns``' Kafka."""
        from cdcrouter.filters import load_filters
        from cdcrouter.schemas.registry import RegistryClient, apply_schemas, desired_subjects, plan_schemas
        from cdcrouter.topics import admin_client, apply_topics, plan_topics, topics_for

        admin = admin_client(conns.kafka.to_librdkafka())
        apply_topics(admin, plan_topics(admin, topics_for(self.filters_file, self.pipeline_file)))
        topics = sorted({f.output_topic for f in load_filters(self.filters_file).filters})
        with RegistryClient(conns.registry.to_client_conf()) as client:
            apply_schemas(client, plan_schemas(client, desired_subjects(self.raw_topic, topics)))

    def drop_database_objects(self, conninfo: str) -> None:
        """The slot (it would pin WAL), the publication and the tables; best effort."""
        with contextlib.suppress(psycopg.Error), psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = %s AND NOT active",
                (self.slot,),
            )
            conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(self.slot)))
            for table in (self.table, self.view_table):
                conn.execute(
                    sql.SQL("DROP TABLE IF EXISTS {}.{}").format(
                        sql.Identifier(self.schema), sql.Identifier(table)
                    )
                )
