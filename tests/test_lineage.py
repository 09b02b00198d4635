"""Erasure lineage by data (issue 20): each version's sidecar names whose samples it read; an erasure marks every
version holding them and every descendant not retrained from scratch."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learnstream import lineage
from learnstream.pseudonym import pseudonym
from learnstream.registry import Registry, Version

KEY = b"k" * 32
ALICE, BOB = pseudonym(KEY, "user", "alice"), pseudonym(KEY, "user", "bob")
OLD = "2020-01-01T00:00:00+02:00"  # the app's clock may lie: long before any version was made
ERASED_AT = "2026-12-07T10:00:00Z"


def commit(registry: Registry, samples: list[dict], *, parent: int | None, from_scratch: bool = False,
           family: str = "chat") -> Version:
    """A version as trainer.run commits one: weights, and the lineage of the samples it read."""
    with registry.writer_lock(), registry.staging(family) as staged:
        (staged / "model.bin").write_bytes(os.urandom(32))
        entry = lineage.write(staged, lineage.owners_of(samples))
        return registry.commit(family, staged, {"lineage": entry, "parent_version": parent, "from_scratch": from_scratch,
                                                "decision": "promoted", "reason": "test", "watermark": 99,
                                                "created_at": "2026-12-07T09:00:00Z"})


def sample(owner: str, ts: str) -> dict:
    return {"owner": owner, "ts": ts}


def test_an_erasure_marks_versions_by_whose_data_they_read_whatever_the_app_clock(tmp_path):
    registry = Registry(tmp_path)
    commit(registry, [], parent=None, from_scratch=True)                                  # 0: the base
    commit(registry, [sample(ALICE, OLD), sample(BOB, OLD)], parent=0)                    # 1: trained on Alice
    commit(registry, [sample(BOB, "2026-12-07T09:30:00Z")], parent=1)                     # 2: inherits v1
    commit(registry, [sample(BOB, OLD)], parent=0, from_scratch=True)                     # 3: clean retrain
    commit(registry, [sample(BOB, OLD), sample(ALICE, "2026-12-07T11:00:00+00:00")], parent=3)  # 4: new consent
    versions = registry.versions("chat")
    assert lineage.marks(versions, {}, []) == {}
    found = lineage.marks(versions, {ALICE: ERASED_AT}, [])
    assert sorted(found) == [1, 2]
    assert found[1] == "trained on samples of 1 erased person(s)"
    assert "descends from version 1" in found[2]
    assert ALICE not in json.dumps(found)
    # Her samples after the erasure are new data: a later erasure marks version 4 as well.
    assert sorted(lineage.marks(versions, {ALICE: "2026-12-07T12:00:00+01:00"}, [])) == [1, 2, 4]


def test_the_sidecar_is_listed_in_the_manifest_and_an_altered_one_marks_its_version(tmp_path):
    registry = Registry(tmp_path)
    version = commit(registry, [sample(BOB, OLD)], parent=None, from_scratch=True)
    assert version.manifest["lineage"] == {"file": "lineage.json", "owners": 1}
    assert lineage.LINEAGE_FILE in version.manifest["files"]
    assert lineage.read(version.path, version.manifest) == {BOB: datetime(2019, 12, 31, 22, tzinfo=UTC)}
    registry.verify("chat", 0)
    (version.path / lineage.LINEAGE_FILE).write_text(json.dumps({"schema": "lineage.v1", "owners": {}}))
    assert lineage.marks(registry.versions("chat"), {}, []) == {
        0: "lineage sidecar does not match its manifest: treated as holding erased data"}
    (version.path / lineage.LINEAGE_FILE).unlink()
    assert "missing" in lineage.marks(registry.versions("chat"), {}, [])[0]


def test_an_override_lasts_until_another_version_is_served():
    history = [{"version": 1, "decision": "promoted"}, {"version": 2, "decision": "promoted"},
               {"version": 1, "decision": "rollback", "allow_erased": "legal hold, ticket 7"},
               {"version": 3, "decision": "rejected"}]
    assert lineage.override(history, 1) == "legal hold, ticket 7"
    assert lineage.override(history[:2], 1) is None
    assert lineage.override([*history, {"version": 4, "decision": "promoted"}], 1) is None
    assert lineage.override([*history, {"version": 1, "decision": "rollback"}], 1) is None


# ---- the sidecar parser ------------------------------------------------------------------------------------

owners = st.text(alphabet="0123456789abcdef", min_size=24, max_size=24).map(lambda h: f"u_{h}")
instants = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
INVISIBLE = st.sampled_from(["\u00a0", "\u200b", "\u2007", "\ufeff", "\u202f", " ", "\t", "\u2060"])


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(owners, instants, max_size=5))
def test_what_the_trainer_writes_parses_back_to_the_same_instants(tmp_path_factory, first):
    folder = tmp_path_factory.mktemp("lineage")
    lineage.write(folder, first)
    assert lineage.parse((folder / lineage.LINEAGE_FILE).read_bytes()) == first


@settings(max_examples=100, deadline=None)
@given(instants, offsets)
def test_samples_with_any_offset_form_give_the_same_earliest_instant(instant, offset):
    later = instant + timedelta(seconds=1)
    found = lineage.owners_of([sample(ALICE, later.isoformat()), sample(ALICE, instant.astimezone(offset).isoformat())])
    assert found == {ALICE: instant}


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_a_lineage_error_or_a_lineage(raw):
    try:
        parsed = lineage.parse(raw)
    except lineage.LineageError:
        return
    assert all(o.startswith("u_") and t.tzinfo is UTC for o, t in parsed.items())


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=30), inner,
                                                                                      max_size=3), max_leaves=10)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=30) | owners, json_values | instants.map(lambda t: t.isoformat()), max_size=4),
       st.sampled_from(["lineage.v1", "lineage.v2", None]))
def test_arbitrary_json_is_a_lineage_error_or_a_lineage(owner_map, schema):
    raw = json.dumps({"schema": schema, "owners": owner_map}).encode()
    try:
        parsed = lineage.parse(raw)
    except lineage.LineageError:
        return
    assert schema == "lineage.v1" and set(parsed) == set(owner_map)


@settings(max_examples=100, deadline=None)
@given(owners, INVISIBLE, st.integers(min_value=0, max_value=26))
def test_an_owner_with_a_unicode_space_or_invisible_character_is_refused(owner, char, at):
    doctored = owner[:at] + char + owner[at:]
    raw = json.dumps({"schema": "lineage.v1", "owners": {doctored: "2026-01-01T00:00:00Z"}}).encode()
    with pytest.raises(lineage.LineageError):
        lineage.parse(raw)


@pytest.mark.parametrize("ts", ["2026-01-01T00:00:00", "yesterday", "", 17, None, "2026-01-01T00:00:00\u200bZ"])
def test_a_time_without_an_offset_or_not_a_time_is_refused(ts):
    with pytest.raises(lineage.LineageError):
        lineage.parse(json.dumps({"schema": "lineage.v1", "owners": {ALICE: ts}}).encode())


def test_a_version_without_a_lineage_entry_is_older_and_an_unlisted_sidecar_is_refused(tmp_path: Path):
    (tmp_path / lineage.LINEAGE_FILE).write_text("{}")
    assert lineage.read(tmp_path, {}) is None  # a version from before sidecars
    with pytest.raises(lineage.LineageError):
        lineage.read(tmp_path, {"lineage": {"file": "lineage.json"}, "files": {}})
