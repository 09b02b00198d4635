"""Erasure lineage compares parsed UTC instants, never timestamp strings (issue 20, first step)."""

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from learnstream.lineage import marks
from learnstream.registry import Version
from schemas import utc_instant

instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@settings(max_examples=100, deadline=None)
@given(instants, offsets)
def test_every_offset_form_parses_to_the_same_instant(instant, offset):
    text = instant.astimezone(offset).isoformat()
    assert utc_instant(text) == instant
    assert utc_instant(instant.isoformat().replace("+00:00", "Z")) == instant


def _version(number: int, created_at: str) -> Version:
    return Version("chat", number, Path("."), {"watermark": 10, "created_at": created_at})


def test_a_version_made_before_the_erasure_is_marked_whatever_the_offset_form():
    # As strings "2026-12-07T06:00:00+02:00" > "2026-12-07T05:00:00Z", yet the version came first.
    versions = [_version(1, "2026-12-07T06:00:00+02:00")]
    # (A version made before lineage sidecars: learnstream/lineage.py falls back to sample ids and instants.)
    assert list(marks(versions, {}, [(3, "2026-12-07T05:00:00Z")])) == [1]
    assert marks(versions, {}, [(3, "2026-12-07T03:00:00Z")]) == {}
