"""Every diagnostic: its code, line, column and message (sqlfluff-style check tuples)."""

from __future__ import annotations

import textwrap

import pytest

from cdcrouter.filters import FilterError, load_filters_text, validate_text

HEAD = """\
filters:
  - id: f1
    consumerId: c1
    outputTopic: t1
    conditions:
"""


def check(text: str, *, head: bool = True) -> list[tuple[str, int, int, str, str | None]]:
    src = (HEAD if head else "") + text
    return [(d.code, d.span.line, d.span.column, d.message, d.hint) for d in validate_text(src, "t.yaml")]


def one(text: str, *, head: bool = True) -> tuple[str, int, int, str, str | None]:
    found = check(text, head=head)
    assert len(found) == 1, found
    return found[0]


def cond(field: str, operator: str, rest: str = "") -> str:
    lines = [f"      - field: {field}", f"        operator: {operator}"]
    lines += [f"        {r}" for r in rest.splitlines() if r]
    return "\n".join(lines) + "\n"


def test_valid_file_has_no_diagnostics() -> None:
    assert check(cond("eventHeader.eventName", "equals", "value: X")) == []


# ---- Y: YAML and shape -------------------------------------------------------------------------


def test_yaml_syntax_error_is_a_positioned_diagnostic() -> None:
    code, line, _col, msg, hint = one("filters:\n  - id: [unclosed\n", head=False)
    assert (code, line) == ("Y001", 3) and "YAML syntax error" in msg and hint


def test_unquoted_path_with_brackets_in_a_flow_mapping_gets_a_quoting_hint() -> None:
    """`{field: eventBody.entities[0].entityType, ...}`: the `[` opens a YAML list. The hint used
    to be the generic "check indentation, colons and quotes here"; now it shows the quoted form."""
    text = (
        "filters:\n  - id: a\n    consumerId: c\n    outputTopic: t\n    conditions:\n"
        "      - {field: eventBody.entities[0].entityType, operator: equals, value: Loan}\n"
    )
    code, line, _col, _msg, hint = one(text, head=False)
    assert (code, line) == ("Y001", 6)
    assert hint and 'field: "eventBody.entities[0].entityType"' in hint, hint
    assert load_filters_text(
        text.replace("field: eventBody.entities[0].entityType", 'field: "eventBody.entities[0].entityType"')
    )


def test_bad_indentation_points_at_the_line() -> None:
    code, line, col, _msg, _ = one("filters:\n  - id: a\n   consumerId: b\n", head=False)
    assert (code, line, col) == ("Y001", 3, 4)


def test_duplicate_key() -> None:
    code, line, col, msg, _ = one(cond("eventHeader.eventName", "equals", "value: X\nvalue: Y"))
    assert (code, line, col) == ("Y005", 9, 9) and "duplicate key 'value' (first at line 8)" in msg


def test_missing_required_filter_key() -> None:
    found = check("filters:\n  - id: f1\n    consumerId: c1\n    conditions: []\n", head=False)
    assert ("Y003", 2, 5) in [f[:3] for f in found]
    assert any("missing required key 'outputTopic'" in f[3] for f in found)


def test_missing_operator() -> None:
    code, line, col, msg, _ = one("      - field: eventHeader.eventName\n        value: X\n")
    assert (code, line, col) == ("Y003", 6, 9) and "'operator'" in msg


def test_unknown_key_suggests_the_closest() -> None:
    found = check(cond("eventHeader.eventName", "equals", "valeu: X"))
    assert ("Y004", 8, 9, "unknown key 'valeu' in a condition", "did you mean 'value'?") in found
    assert [f[:3] for f in found] == [("V005", 6, 9), ("Y004", 8, 9)]  # and the missing value


def test_unknown_filter_key() -> None:
    found = check(
        "filters:\n  - id: f1\n    consumerID: c1\n    outputTopic: t\n    conditions: []\n", head=False
    )
    assert ("Y004", 3, 5, "unknown key 'consumerID' in a filter", "did you mean 'consumerId'?") in found


def test_wrong_type_for_enabled() -> None:
    text = HEAD.replace("    conditions:", "    enabled: maybe\n    conditions:") + cond(
        "eventHeader.eventName", "equals", "value: X"
    )
    code, line, col, msg, _ = one(text, head=False)
    assert (code, line, col) == ("Y002", 5, 14) and "enabled must be true or false" in msg


def test_yaml_1_2_scalars_yes_stays_a_string() -> None:
    fs = load_filters_text(HEAD + cond("eventHeader.eventName", "equals", "value: yes"), "t.yaml")
    lit = fs.filters[0].condition.right  # type: ignore[attr-defined]
    assert lit.value == "yes"


def test_empty_file() -> None:
    assert one("", head=False)[:3] == ("Y003", 1, 1)


# ---- V: semantics ------------------------------------------------------------------------------


def test_unknown_field_suggests_the_closest() -> None:
    code, line, col, msg, hint = one(cond("eventHeader.eventNme", "equals", "value: X"))
    assert (code, line, col) == ("V001", 6, 16)
    assert msg == "unknown field 'eventHeader.eventNme'" and hint == "did you mean 'eventHeader.eventName'?"


def test_array_without_index() -> None:
    code, _, _, msg, hint = one(cond("eventBody.entities.entityType", "equals", "value: X"))
    assert code == "V001" and "is an array" in msg and "[*]" in (hint or "")


def test_unknown_operator_suggests_the_closest() -> None:
    code, line, col, msg, hint = one(cond("eventHeader.eventName", "equal", "value: X"))
    assert (code, line, col, msg, hint) == (
        "V002",
        7,
        19,
        "unknown operator 'equal'",
        "did you mean 'equals'?",
    )


def test_unknown_value_type() -> None:
    code, line, col, msg, _ = one(cond("eventHeader.eventName", "equals", "value: X\nvalueType: text"))
    assert (code, line, col) == ("V003", 9, 20) and "unknown valueType 'text'" in msg


def test_string_value_type_on_a_number_field() -> None:
    code, line, col, msg, hint = one(
        cond("eventHeader.createdDate", "equals", "value: '1'\nvalueType: string")
    )
    assert (code, line, col) == ("V004", 9, 20) and "holds a number" in msg and "number or timestamp" in hint


def test_matches_needs_string() -> None:
    code, line, col, msg, _ = one(cond("eventHeader.eventName", "matches", "value: '^a'\nvalueType: number"))
    assert (code, line, col) == ("V004", 9, 20) and "matches needs valueType string" in msg


def test_ordering_on_booleans() -> None:
    code, line, col, msg, _ = one(
        cond("eventBody.entities[0].updatedAttributes.flag", "greaterThan", "value: true")
    )
    assert (code, line, col) == ("V004", 7, 19) and "cannot compare booleans" in msg


def test_missing_value() -> None:
    code, line, col, msg, _ = one(cond("eventHeader.eventName", "equals"))
    assert (code, line, col, msg) == ("V005", 6, 9, "equals needs 'value'")


def test_value_key_the_operator_does_not_use() -> None:
    code, line, col, msg, _ = one(cond("eventHeader.eventName", "equals", "value: X\nvalues: [Y]"))
    assert (code, line, col) == ("V006", 9, 17) and "equals uses 'value', not 'values'" in msg


def test_is_null_takes_no_value() -> None:
    code, line, col, msg, _ = one(cond("eventHeader.eventType", "isNull", "value: X"))
    assert (code, line, col) == ("V006", 8, 16) and "isNull uses no value" in msg


def test_not_a_number() -> None:
    code, line, col, msg, _ = one(cond("eventHeader.createdDate", "greaterThan", "value: soon"))
    assert (code, line, col) == ("V007", 8, 16) and "is not a number" in msg


def test_number_beyond_decimal_38_10() -> None:
    code, _, _, msg, _ = one(cond("eventHeader.createdDate", "greaterThan", "value: 0.00000000001"))
    assert code == "V007" and "DECIMAL(38, 10)" in msg


def test_timestamp_without_offset() -> None:
    code, line, col, msg, _ = one(
        cond("eventHeader.createdDate", "greaterThan", "value: '2024-01-01T00:00:00'\nvalueType: timestamp")
    )
    assert (code, line, col) == ("V007", 8, 16) and "UTC offset" in msg


@pytest.mark.parametrize(
    "value", ["'2024-01-01T00:00:00.123456789+05:30'", "'2024-01-01T00:00:00.5Z'", "1706702400000", "'-5'"]
)
def test_timestamp_literals_in_the_documented_forms(value: str) -> None:
    field = "eventBody.entities[0].updatedAttributes.at"
    assert check(cond(field, "greaterThan", f"value: {value}\nvalueType: timestamp")) == []


@pytest.mark.parametrize(
    "value", ["'2024-01-01 00:00:00Z'", "'2024-01-01T00:00:00+0000'", "'2023-02-29T00:00:00Z'", "'infinity'"]
)
def test_timestamp_literal_in_another_form(value: str) -> None:
    field = "eventBody.entities[0].updatedAttributes.at"
    code, line, col, msg, hint = one(cond(field, "greaterThan", f"value: {value}\nvalueType: timestamp"))
    assert (code, line, col) == ("V007", 8, 16) and "neither epoch milliseconds nor ISO-8601" in msg
    assert hint is not None and "2024-01-31T12:00:00Z" in hint


def test_unquoted_number_for_string_value_type() -> None:
    code, _, _, msg, hint = one(cond("eventHeader.eventName", "equals", "value: 42\nvalueType: string"))
    assert code == "V007" and "not a string" in msg and hint == 'quote it: "42"'


def test_empty_in_list() -> None:
    code, line, col, msg, _ = one(cond("eventHeader.eventName", "in", "values: []"))
    assert (code, line, col, msg) == ("V008", 8, 17, "in has an empty values list")


def test_between_min_greater_than_max() -> None:
    code, line, col, msg, hint = one(cond("eventHeader.createdDate", "between", "min: 10\nmax: 5"))
    assert (code, line, col) == ("V009", 8, 14) and "greater than max" in msg and hint == "swap min and max"


@pytest.mark.parametrize(
    ("pattern", "offset", "words"),
    [
        ("'['", 1, "missing ']'"),
        ("'\\bword'", 1, "\\b is not portable"),
        ("'(?<name>x)'", 1, "named groups"),
        ("'a++'", 3, "possessive"),
        ("'x{2,1}'", 2, "min > max"),
        ("'(?m)^a'", 1, "inline flags"),
        ("'\\p{Alpha}'", 1, "\\p is not portable"),
        ("''", 1, "empty regex"),
    ],
)
def test_regex_outside_the_portable_dialect(pattern: str, offset: int, words: str) -> None:
    code, line, col, msg, hint = one(cond("eventHeader.eventName", "matches", f"value: {pattern}"))
    assert (code, line, col) == ("V010", 8, 16)
    assert f"at character {offset}:" in msg and words in msg and hint


def test_duplicate_filter_id() -> None:
    text = HEAD + cond("eventHeader.eventName", "equals", "value: X")
    text += "  - id: f1\n    consumerId: c2\n    outputTopic: t2\n    conditions:\n"
    text += cond("eventHeader.eventName", "equals", "value: Y")
    code, line, col, msg, _ = one(text, head=False)
    assert (code, line, col) == ("V011", 9, 9) and "duplicate filter id 'f1' (first defined at line 2)" in msg


def test_bad_filter_id() -> None:
    text = HEAD.replace("id: f1", "id: 'my filter'") + cond("eventHeader.eventName", "equals", "value: X")
    code, line, col, msg, _ = one(text, head=False)
    assert (code, line, col) == ("V012", 2, 9) and "'my filter'" in msg


@pytest.mark.parametrize(
    ("topic", "words"),
    [
        ("'bad topic!'", "contains ' ', '!'"),
        ("'..'", "is empty"),
        ("x" * 250, "too long"),
        ("raw-business-events", "loop"),
    ],
)
def test_illegal_topic(topic: str, words: str) -> None:
    text = HEAD.replace("outputTopic: t1", f"outputTopic: {topic}") + cond(
        "eventHeader.eventName", "equals", "value: X"
    )
    code, line, col, msg, _ = one(text, head=False)
    assert (code, line, col) == ("V013", 4, 18) and words in msg


def test_two_enabled_filters_on_one_topic_conflict() -> None:
    text = HEAD + cond("eventHeader.eventName", "equals", "value: X")
    text += "  - id: f2\n    consumerId: c2\n    outputTopic: t1\n    conditions:\n"
    text += cond("eventHeader.eventName", "equals", "value: Y")
    code, line, col, msg, hint = one(text, head=False)
    assert (code, line, col) == ("V014", 11, 18) and "already written by enabled filter 'f1'" in msg
    assert "any:" in (hint or "")


def test_a_disabled_filter_may_share_a_topic() -> None:
    text = HEAD + cond("eventHeader.eventName", "equals", "value: X")
    text += "  - id: f2\n    consumerId: c2\n    outputTopic: t1\n    enabled: false\n    conditions:\n"
    text += cond("eventHeader.eventName", "equals", "value: Y")
    assert check(text, head=False) == []


def test_bad_condition_logic() -> None:
    text = HEAD.replace("    conditions:", "    conditionLogic: XOR\n    conditions:")
    code, line, col, msg, _ = one(text + cond("eventHeader.eventName", "equals", "value: X"), head=False)
    assert (code, line, col) == ("V015", 5, 21) and "AND or OR" in msg


def test_nested_any_entity() -> None:
    text = "      - anyEntity:\n          - anyEntity:\n" + textwrap.indent(
        cond("eventBody.entities[*].entityType", "equals", "value: X"), "        "
    )
    code, line, col, msg, _ = one(text)
    assert (code, line, col) == ("V016", 7, 13) and "cannot be nested" in msg


def test_empty_conditions_and_empty_group() -> None:
    assert one("filters:\n  - {id: a, consumerId: b, outputTopic: c, conditions: []}\n", head=False)[:2] == (
        "V017",
        2,
    )
    assert one("      - any: []\n")[:4] == ("V017", 6, 9, "'any:' group is empty")


def test_all_problems_are_collected_then_reported() -> None:
    text = cond("eventHeader.eventNme", "equals", "value: X") + cond(
        "eventHeader.eventName", "in", "values: []"
    )
    with pytest.raises(FilterError) as err:
        load_filters_text(HEAD + text, "t.yaml")
    assert [d.code for d in err.value.diagnostics] == ["V001", "V008"]
    assert "t.yaml:6:16 V001 [f1]" in err.value.message


def test_max_entities_setting() -> None:
    body = HEAD + cond("eventBody.entities[*].entityType", "equals", "value: Car")
    fs = load_filters_text("settings:\n  maxEntities: 3\n" + body, "t.yaml")
    assert fs.filters[0].condition.limit == 3  # type: ignore[attr-defined]
    found = check("settings:\n  maxEntities: 0\n" + body, head=False)
    assert [f[:3] for f in found] == [("V018", 2, 16)] and "1 to 100" in found[0][3]
    found = check("settings:\n  maxEntitys: 3\n" + body, head=False)
    assert found[0][:3] == ("Y004", 2, 3) and found[0][4] == "did you mean 'maxEntities'?"
