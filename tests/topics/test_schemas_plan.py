"""Schemas as code on the real registry: register, idempotent re-apply, incompatible change refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from cdcrouter.schemas import raw_schema_text
from cdcrouter.schemas.registry import (
    RegistryClient,
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
    assert registry.compatibility(f"{raw}-value") == "BACKWARD"
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
    newer["fields"].append({"name": "region", "type": "string"})  # new field, no default: not BACKWARD
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
