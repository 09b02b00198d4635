"""What `dlq redrive` writes and reads back is hostile input like any record: the redrive header and the redrive
marker decode or are refused, never raise anything else; and the store's count of outstanding failures is the
same whichever order a marker and a failed-again entry arrive in."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings as hypothesis_settings
from hypothesis import strategies as st

from consumers import dlq
from learnstream.store import Batch, Store
from schemas import InvalidEvent, decode_redrive_header

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
SHAPED = st.dictionaries(
    st.sampled_from(["schema", "source", "topic", "partition", "offset", "generation", "ts", "reason", "redrive"]),
    JSON | st.sampled_from(["dlq.redriven.v1", "dlq.v1", "2026-01-01T00:00:00Z", "chat.raw"]),
    max_size=6,
)
ANY_RECORD = st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode()) | SHAPED.map(
    lambda v: json.dumps(v).encode())


def _entry(offset: int, reason: str, redrive: dict | None = None) -> dict:
    return {"schema": "dlq.v1", "reason": reason, "ts": "2026-01-01T00:00:00Z",
            "source": {"topic": "chat.raw", "partition": 0, "offset": offset},
            **({"redrive": redrive} if redrive else {}), "payload": "{}"}


def _marker(offset: int, generation: int) -> dict:
    return {"schema": "dlq.redriven.v1", "generation": generation, "ts": "2026-01-01T00:00:01Z",
            "source": {"topic": "chat.raw", "partition": 0, "offset": offset}}


@hypothesis_settings(max_examples=200, deadline=None)
@given(ANY_RECORD)
def test_a_redrive_header_decodes_or_is_refused(raw):
    try:
        info = decode_redrive_header(raw)
    except InvalidEvent:
        return
    assert info["generation"] >= 1 and info["partition"] >= 0 and info["offset"] >= 0


@hypothesis_settings(max_examples=300, deadline=None)
@given(JSON | SHAPED)
def test_any_record_on_a_dlq_topic_is_indexed_or_refused(value):
    batch = Batch()
    try:
        dlq.index(batch, "chat.raw.dlq", value)
    except InvalidEvent:
        assert not batch.dlq and not batch.dlq_redrives


@pytest.mark.parametrize("generation", [0, -1, 2**63, "1", True, None])
def test_a_marker_with_a_generation_that_is_not_a_positive_integer_is_refused(generation):
    with pytest.raises(InvalidEvent):
        dlq.index(Batch(), "chat.raw.dlq", {**_marker(3, 1), "generation": generation})


def test_an_entry_written_again_after_a_redrive_keys_on_the_first_failure():
    again = _entry(40, "invalid_value", redrive={"partition": 0, "offset": 3, "generation": 1})
    assert dlq.index_row("chat.raw.dlq", again)[:3] == ("chat.raw.dlq", 0, 3)
    assert dlq.first_failure(_entry(3, "oversize")) == (0, 3)


# Each ordering of the records a redrive leads to, and what the store must then say of the failure at offset 3.
FAILED_AGAIN = [_entry(3, "oversize"), _marker(3, 1),
                _entry(40, "invalid_value", redrive={"partition": 0, "offset": 3, "generation": 1})]
SUCCEEDED = [_entry(3, "oversize"), _marker(3, 1)]


@pytest.mark.parametrize("records, outstanding, redriven", [
    (FAILED_AGAIN, {"invalid_value": 1}, {}),
    ([FAILED_AGAIN[0], FAILED_AGAIN[2], FAILED_AGAIN[1]], {"invalid_value": 1}, {}),  # the marker lands last
    (SUCCEEDED, {}, {"oversize": 1}),
    (SUCCEEDED + [_entry(41, "oversize", redrive={"partition": 0, "offset": 3, "generation": 2}), _marker(3, 2)],
     {"oversize": 1}, {}),  # the second redrive failed too
    (FAILED_AGAIN + [_marker(3, 2)], {}, {"invalid_value": 1}),  # and the second one succeeded
])
async def test_the_store_counts_each_failure_once_and_outstanding_until_redriven(tmp_path, records, outstanding,
                                                                                 redriven):
    async with Store(tmp_path / "store.db") as store:
        for record in records:  # one batch each: the order between batches is what varies
            batch = Batch()
            dlq.index(batch, "chat.raw.dlq", record)
            await store.write(batch)
        assert await store.dlq_by_reason("chat") == outstanding
        assert await store.dlq_by_reason("chat", redriven=True) == redriven
