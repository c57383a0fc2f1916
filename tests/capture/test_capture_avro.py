"""Capture's BusinessEvent encoder (the native codec, framed) writes exactly fastavro's bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cdcrouter.capture.sink import AvroEncoder

texts = st.text(max_size=40)
opt_texts = st.none() | texts
longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)
entities = st.fixed_dictionaries(
    {
        "entityType": texts,
        "entityId": texts,
        "updatedAttributes": st.dictionaries(texts, opt_texts, max_size=6)
        | st.dictionaries(st.text(max_size=3), st.text(min_size=3000, max_size=5000), max_size=1),
    }
)
events = st.fixed_dictionaries(
    {
        "eventHeader": st.fixed_dictionaries(
            {
                "uuid": texts,
                "eventName": texts,
                "createdDate": longs,
                "savedDate": longs,
                "eventType": opt_texts,
            }
        ),
        "eventBody": st.fixed_dictionaries({"entities": st.lists(entities, max_size=3)}),
        "sourceMetadata": st.fixed_dictionaries(
            {"table": opt_texts, "operation": opt_texts, "timestamp": st.none() | longs}
        ),
    }
)


@settings(max_examples=300)
@given(events, st.integers(min_value=0, max_value=2**31 - 1))
def test_fast_encoder_equals_fastavro(event: dict, schema_id: int) -> None:
    enc = AvroEncoder(schema_id)
    assert enc.encode(event) == enc.encode_generic(event)
