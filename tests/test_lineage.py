"""Erasure lineage by data (issue 20): each version's sidecar names whose samples it read; an erasure marks every
version holding them and every descendant not retrained from scratch."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learnstream import kafka, lineage, topics
from learnstream.pseudonym import pseudonym
from learnstream.registry import Registry, Version, model_updated_event
from learnstream.store import Store
from consumers.replay import replay
from producers.sdk import EventProducer
from schemas import utc_now
from serving.holders import ModelHolder
from tests.procs import CLI_TIMEOUT_S, REPO, settings_env
from tests.test_e2e import wait_served
from tests.test_pipeline import wait_for
from tests.test_privacy_e2e import event

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


def test_lineage_dates_samples_by_the_broker_not_the_app_clock():
    """A sample appended before the erasure whose app clock ran hours ahead still counts as before it."""
    ahead = {"owner": ALICE, "ts": "2026-12-07T15:00:00Z", "appended_at": "2026-12-07T09:59:59.999Z"}
    assert lineage.owners_of([ahead]) == {ALICE: datetime(2026, 12, 7, 9, 59, 59, 999000, tzinfo=UTC)}
    assert lineage.owners_of([sample(BOB, OLD)]) == {BOB: datetime(2019, 12, 31, 22, tzinfo=UTC)}  # no append time


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


class Loaded:
    def __init__(self, version: Version) -> None:
        self.version = version.number


async def test_a_holder_never_loads_a_refused_version_and_says_so_once(tmp_path, caplog):
    registry = Registry(tmp_path)
    commit(registry, [], parent=None, from_scratch=True)
    commit(registry, [sample(ALICE, OLD)], parent=0)
    answers = iter([None, "trained on samples of 1 erased person(s)", "trained on samples of 1 erased person(s)",
                    RuntimeError("database is locked")])

    async def refusal(number: int) -> str | None:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    holder = ModelHolder("chat", registry, load=Loaded, refusal=refusal)
    try:
        assert await holder.swap_to(0) and holder.version == 0
        with caplog.at_level(logging.ERROR, logger="serving.holders"):
            assert not await holder.swap_to(1)
            assert not await holder.swap_to(1)  # reconciliation asks again: no second line
            assert not await holder.swap_to(1)  # a failing check refuses too, never raises
        assert holder.version == 0
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 2 and "version 1 not swapped in: erased data" in lines[0]
        assert "could not be checked: RuntimeError" in lines[1]
    finally:
        holder.close()


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


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=400), st.none(), st.integers(), st.lists(st.text(max_size=5), max_size=2)))
def test_an_override_reason_is_kept_cleaned_or_refused_with_a_message(text):
    try:
        kept = lineage.override_reason(text, key=KEY)
    except ValueError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert kept and kept == kept.strip() and "\u200b" not in kept and "  " not in kept


@pytest.mark.parametrize("text", ["", " ", "\u200b\u00a0\u2060", "\t\n", "x" * 301])
def test_a_blank_or_overlong_override_reason_is_refused(text):
    with pytest.raises(ValueError):
        lineage.override_reason(text, key=KEY)


def test_an_override_reason_keeps_no_identifier():
    kept = lineage.override_reason("legal\u200b hold:\u00a0call Priya on 07700 900461", key=KEY)
    assert kept.startswith("legal hold: call ") and "07700" not in kept


# ---- on the real broker ------------------------------------------------------------------------------------


def _cli(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], cwd=REPO, env=settings_env(settings),
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S)


async def _rollback_http(settings, body: dict) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{settings.http_port}/api/models/chat/rollback", json=body) as r:
            return r.status, await r.json()


@pytest.mark.kafka
async def test_old_timestamps_two_versions_an_erasure_marks_both_neither_is_served_again_and_replay_keeps_it(
        make_settings, start_pipeline, caplog):
    caplog.set_level(logging.INFO)
    settings = make_settings(chat_threshold=4)
    pipeline = await start_pipeline(settings)
    old = "2020-03-01T10:00:00Z"  # the app's clock: years before either version was made
    async with EventProducer(settings) as events:
        for run, users in enumerate((("erase-me", "keep-me"), ("keep-me", "keep-too"))):
            for user in users:
                for n, role in enumerate(("patient", "therapist")):
                    await events.send({**event(n, user=user, session=f"s-{user}-{run}", text=f"turn {n} about sleep",
                                               role=role), "ts": old})
            await wait_served(pipeline, run + 1)
        await events.send({"schema": "erasure.v1", "event_id": "erase-1", "ts": utc_now(), "user_id": "erase-me"})
    owner = pseudonym(settings.key_bytes(), "user", "erase-me")

    async def erased() -> bool:
        async with Store(settings.store_path) as store:
            return owner in await store.erasures()

    await wait_for(erased)
    status = orjson.loads((await pipeline.serving.status(None)).body)["families"]["chat"]
    assert status["erased_in_versions"] == [1, 2]
    assert [v["erased"] is not None for v in status["versions"]] == [False, True, True]
    assert status["served_version"] == 2 and status["served_version_erased"]
    assert owner not in json.dumps(status)
    listed = [json.loads(line) for line in (await asyncio.to_thread(_cli, settings, "models", "list", "--family",
                                                                    "chat")).stdout.splitlines()]
    assert [row["erased"] is not None for row in listed] == [False, True, True]

    # Rollback to a marked version: refused by the CLI (exit 1, one line) and the HTTP route (409).
    refused = await asyncio.to_thread(_cli, settings, "models", "rollback", "chat", "1")
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "holds erased data" in refused.stderr and "--allow-erased" in refused.stderr
    assert (await _rollback_http(settings, {"version": 1}))[0] == 409
    assert (await _rollback_http(settings, {"version": 1, "allow_erased": "\u200b \u00a0"}))[0] == 400
    blank = await asyncio.to_thread(_cli, settings, "models", "rollback", "chat", "1", "--allow-erased", " ")
    assert blank.returncode == 1 and "needs a reason" in blank.stderr
    assert settings_served(settings) == 2

    # Serving refuses a marked version announced on model.updated: a log line, the served model stays.
    registry = Registry(settings.registry_dir)
    await _announce(settings, registry.get("chat", 1))
    async def refused_in_the_log() -> bool:
        return any("version 1 not swapped in: erased data" in r.getMessage() for r in caplog.records)

    await wait_for(refused_in_the_log)
    assert pipeline.serving.holders["chat"].version == 2

    # With --allow-erased and a reason it goes ahead: logged, and the reason kept in the history.
    allowed = await asyncio.to_thread(_cli, settings, "models", "rollback", "chat", "1", "--allow-erased",
                                      "legal hold, ticket 7, asked by alice@example.com")
    assert allowed.returncode == 0, allowed.stderr
    await wait_served(pipeline, 1)
    entry = registry.history("chat")[-1]
    assert entry["decision"] == "rollback" and entry["allow_erased"].startswith("legal hold, ticket 7, asked by [EMAIL_")
    status = orjson.loads((await pipeline.serving.status(None)).body)["families"]["chat"]
    assert status["served_version_override"] == entry["allow_erased"]

    # A replay renumbers the store; the marks stay (they come from the sidecars and the erasure ledger).
    async with Store(settings.store_path) as store:
        before = await lineage.family_marks(registry, store, "chat")
    await pipeline.stop()  # replay refuses to swap the store under a running store writer
    await replay(settings)
    async with Store(settings.store_path) as store:
        assert await lineage.family_marks(registry, store, "chat") == before


def settings_served(settings) -> int | None:
    return Registry(settings.registry_dir).served("chat")


async def _announce(settings, version: Version) -> None:
    producer = kafka.producer(settings)
    await producer.start()
    try:
        event = model_updated_event(version, decision="promoted", reason="a test announces it")
        await producer.send_and_wait(topics.prefixed(settings, topics.MODEL_UPDATED), orjson.dumps(event),
                                     key=b"chat")
    finally:
        await producer.stop()

