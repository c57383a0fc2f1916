"""Schemas as code on the real registry: register, idempotent re-apply, incompatible change refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from cdcrouter.schemas import raw_schema_text
from cdcrouter.schemas.registry import (
    DEFAULT_COMPATIBILITY,
    RegistryClient,
    SchemaRefused,
    SchemaRegistryError,
    apply_schemas,
    desired_subjects,
    plan_schemas,
)

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("registry")]


@pytest.fixture
def registry(stack: Any) -> Any:
    with RegistryClient(stack.connections.registry.to_client_conf()) as client:
        yield client


def test_register_then_up_to_date(registry: RegistryClient, unique_name: Callable[[str], str]) -> None:
    raw, out = unique_name("sr-raw"), unique_name("sr-out")
    subjects = desired_subjects(raw, [out])
    plan = plan_schemas(registry, subjects)
    assert [c.action for c in plan.changes] == ["register", "register"]
    ids = apply_schemas(registry, plan)
    assert set(ids) == {f"{raw}-value", f"{out}-value"}
    assert registry.compatibility(f"{raw}-value") == "FULL_TRANSITIVE"
    again = plan_schemas(registry, subjects)
    assert again.pending == [] and all(c.action == "none" for c in again.changes)
    assert apply_schemas(registry, again) == ids


def test_incompatible_change_is_refused_with_the_registrys_word(
    registry: RegistryClient, unique_name: Callable[[str], str]
) -> None:
    raw = unique_name("sr-bad")
    subject = f"{raw}-value"
    # an older contract with a required field the new raw schema does not have (and no default)
    older = json.loads(raw_schema_text())
    older["fields"][0]["type"]["fields"].append({"name": "tenant", "type": "string"})
    first = plan_schemas(registry, {subject: json.dumps(older)})
    apply_schemas(registry, first)
    newer = json.loads(raw_schema_text())
    newer["fields"].append({"name": "region", "type": "string"})  # no default, tenant dropped: not FULL
    plan = plan_schemas(registry, {subject: json.dumps(newer)})
    assert plan.incompatible and "INCOMPATIBLE" in plan.render()
    with pytest.raises(SchemaRegistryError, match="refusing to register incompatible"):
        apply_schemas(registry, plan)
    assert registry.latest(subject)["version"] == 1  # nothing changed
    # the compatible direction (a new field with a default) is accepted
    ok = json.loads(raw_schema_text())
    ok["fields"][0]["type"]["fields"].append({"name": "tenant", "type": "string", "default": ""})
    plan = plan_schemas(registry, {subject: json.dumps(ok)})
    assert not plan.incompatible
    apply_schemas(registry, plan)
    assert registry.latest(subject)["version"] == 2


def without_event_name() -> dict[str, Any]:
    schema = json.loads(raw_schema_text())
    fields = schema["fields"][0]["type"]["fields"]
    fields[:] = [f for f in fields if f["name"] != "eventName"]
    return schema


def test_the_raw_subject_refuses_a_schema_its_readers_cannot_read(
    registry: RegistryClient, unique_name: Callable[[str], str]
) -> None:
    """Apicurio's ccompat API enforces FULL_TRANSITIVE: the router reads eventHeader.eventName."""
    subject = unique_name("sr-name") + "-value"
    apply_schemas(registry, plan_schemas(registry, {subject: raw_schema_text()}))
    assert registry.compatibility(subject) == DEFAULT_COMPATIBILITY == "FULL_TRANSITIVE"
    plan = plan_schemas(registry, {subject: json.dumps(without_event_name())})
    assert plan.incompatible
    with pytest.raises(SchemaRegistryError, match="refusing to register incompatible"):
        apply_schemas(registry, plan)
    with pytest.raises(SchemaRefused):  # and the registry itself refuses it, past our plan
        registry.register(subject, without_event_name())
    assert registry.latest(subject)["version"] == 1


def test_transitive_means_every_earlier_version(
    registry: RegistryClient, unique_name: Callable[[str], str]
) -> None:
    """v1 has an optional string, v2 drops it, v3 brings it back as a long: each step is FULL
    compatible with the one before, but v1's readers cannot read v3's records."""
    subject = unique_name("sr-trans") + "-value"

    def version(extra: dict[str, Any] | None) -> str:
        schema = json.loads(raw_schema_text())
        if extra:
            schema["fields"][0]["type"]["fields"].append(extra)
        return json.dumps(schema)

    v1 = version({"name": "region", "type": ["null", "string"], "default": None})
    v2 = version(None)
    v3 = version({"name": "region", "type": "long", "default": 0})
    apply_schemas(registry, plan_schemas(registry, {subject: v1}))
    apply_schemas(registry, plan_schemas(registry, {subject: v2}))
    assert registry.check(subject, v3, "FULL") == (True, [])  # against v2 alone it is fine
    plan = plan_schemas(registry, {subject: v3})
    assert plan.incompatible
    with pytest.raises(SchemaRefused):  # the registry itself enforces it on registration
        registry.register(subject, v3)
    assert registry.latest(subject)["version"] == 2


def test_apply_rechecks_under_the_level_it_sets(
    registry: RegistryClient, unique_name: Callable[[str], str]
) -> None:
    """A subject left at BACKWARD: the plan's check passes there, apply must check again under
    FULL_TRANSITIVE after setting it, and register nothing."""
    subject = unique_name("sr-level") + "-value"
    apply_schemas(registry, plan_schemas(registry, {subject: raw_schema_text()}, "BACKWARD"))
    plan = plan_schemas(registry, {subject: json.dumps(without_event_name())})
    assert not plan.incompatible and "BACKWARD -> FULL_TRANSITIVE" in plan.render()
    with pytest.raises(SchemaRegistryError, match="under FULL_TRANSITIVE"):
        apply_schemas(registry, plan)
    assert registry.latest(subject)["version"] == 1
    assert registry.compatibility(subject) == "FULL_TRANSITIVE"


def test_plan_warns_about_a_level_that_does_not_protect_readers(
    registry: RegistryClient, unique_name: Callable[[str], str]
) -> None:
    subject = unique_name("sr-warn") + "-value"
    assert (
        "lets a new raw schema break readers"
        in plan_schemas(registry, {subject: raw_schema_text()}, "BACKWARD").render()
    )
    assert "break readers" not in plan_schemas(registry, {subject: raw_schema_text()}).render()


def test_capture_registers_the_raw_schema_with_the_same_level(
    stack: Any, registry: RegistryClient, unique_name: Callable[[str], str]
) -> None:
    from cdcrouter.capture.sink import register_raw_schema
    from cdcrouter.errors import CaptureError

    topic = unique_name("sr-capture")
    schema_id = register_raw_schema(stack.connections, topic)
    assert registry.compatibility(f"{topic}-value") == "FULL_TRANSITIVE"
    assert registry.lookup(f"{topic}-value", raw_schema_text()) == schema_id
    assert register_raw_schema(stack.connections, topic) == schema_id  # idempotent
    # a subject whose latest version the contract cannot follow: capture refuses, says why
    other = unique_name("sr-capture2")
    older = json.loads(raw_schema_text())
    older["fields"][0]["type"]["fields"].append({"name": "tenant", "type": "string"})
    apply_schemas(registry, plan_schemas(registry, {f"{other}-value": json.dumps(older)}))
    with pytest.raises(CaptureError, match="incompatible"):
        register_raw_schema(stack.connections, other)


@pytest.fixture
def cli(stack: Any, unique_name: Callable[[str], str], tmp_path: Any, monkeypatch: Any) -> Any:
    """``(prefix, raw topic, run)``: ``run("plan"|"apply", *more)`` runs ``cdcrouter schemas`` over
    two benchmark filters whose topics start with ``prefix``; returns the exit code."""
    from cdcrouter.cli.main import main
    from cdcrouter.route.events import bench_filters_yaml

    monkeypatch.setenv("CDCROUTER_REGISTRY__URL", stack.connections.registry.url)
    prefix = unique_name("sr-cli") + "-"
    filters = tmp_path / "filters.yaml"
    filters.write_text(bench_filters_yaml(prefix, 2))
    raw = prefix + "raw"

    def run(command: str, *more: str) -> int:
        return main(["schemas", command, "-f", str(filters), "--raw-topic", raw, *more])

    return prefix, raw, run


def test_the_schemas_commands_set_and_check_the_level(
    registry: RegistryClient, cli: Any, capsys: Any
) -> None:
    """Through the CLI: apply sets FULL_TRANSITIVE on every subject; a subject left at BACKWARD shows
    up in the plan as a level to change; a weaker --compatibility is warned about."""
    prefix, raw, run = cli
    assert run("apply") == 0
    subjects = [f"{raw}-value", f"{prefix}loan-created-value", f"{prefix}loan-payments-value"]
    assert [registry.compatibility(s) for s in subjects] == ["FULL_TRANSITIVE"] * 3
    registry.set_compatibility(subjects[0], "BACKWARD")
    capsys.readouterr()
    assert run("plan") == 0
    assert f"~ set {subjects[0]} compatibility BACKWARD -> FULL_TRANSITIVE" in capsys.readouterr().out
    assert run("plan", "--compatibility", "backward") == 0
    assert "BACKWARD lets a new raw schema break readers" in capsys.readouterr().out
    assert run("apply") == 0
    assert registry.compatibility(subjects[0]) == "FULL_TRANSITIVE"


def test_schemas_apply_registers_the_filtered_schemas_derived_from_an_evolved_raw_schema(
    registry: RegistryClient, cli: Any, capsys: Any
) -> None:
    """A newer capture registered an evolved raw schema (traceId) and, under a subject left at NONE,
    one without eventName: plan shows the derived filtered schemas and warns about the unreadable
    one; apply registers them where the router will look them up."""
    from cdcrouter.schemas.evolution import derived_filtered_text

    prefix, raw, run = cli
    assert run("apply") == 0
    evolved = json.loads(raw_schema_text())
    evolved["fields"][0]["type"]["fields"].insert(
        2, {"name": "traceId", "type": ["null", "string"], "default": None}
    )
    evolved_id = registry.register(f"{raw}-value", evolved)
    registry.set_compatibility(f"{raw}-value", "NONE")
    broken_id = registry.register(f"{raw}-value", without_event_name())
    capsys.readouterr()

    assert run("plan") == 0
    out = capsys.readouterr().out
    filtered = [f"{prefix}loan-created-value", f"{prefix}loan-payments-value"]
    for subject in filtered:
        assert (
            f"+ register {subject} (new version after v1), derived from {raw}-value v2 (id {evolved_id})"
            in out
        )
    assert (
        f"{raw}-value v3 (id {broken_id}) cannot be read by this release's contract: eventHeader.eventName"
        in out
    )

    assert run("apply") == 0
    text = registry.schema_by_id(evolved_id)
    assert text is not None
    for subject in filtered:
        assert registry.lookup(subject, derived_filtered_text(text)) is not None  # what the router looks up
        assert registry.latest(subject)["version"] == 2
    capsys.readouterr()
    assert run("plan") == 0
    assert "0 subject(s) to change" in capsys.readouterr().out
