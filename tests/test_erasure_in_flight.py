"""Erasure by instants, not strings, and by the broker's clock, not the apps' (issue 20, part B).

In flight: an erased person's events appended to a raw topic before their erasure request, and not yet anonymized
when it is applied, are skipped ("erased": counted, never sealed under a new key); events appended after it are new
data, whatever `ts` the app gave either.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from learnstream import kafka, key_tree
from learnstream.keystore import KeyStore, seal, unseal
from learnstream.pseudonym import pseudonym
from learnstream.store import Batch, Store, sample_row, utc_microseconds
from producers.sdk import EventProducer
from tests.test_pipeline import wait_for

instants = st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(UTC))
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


def _forms(instant: datetime, offset: timezone) -> list[str]:
    """Spellings of one instant that ISO-8601 parsing reads alike; as strings they sort in any order."""
    utc = instant.astimezone(UTC)
    return [utc.isoformat(), utc.isoformat().replace("+00:00", "Z"), instant.astimezone(offset).isoformat(),
            utc.strftime("%Y%m%dT%H%M%S.%fZ")]


@settings(max_examples=100, deadline=None)
@given(instants, offsets)
def test_utc_us_reads_every_form_as_the_same_instant(instant, offset):
    expected = utc_microseconds(instant.isoformat())
    assert all(utc_microseconds(form) == expected for form in _forms(instant, offset))


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.text(max_size=40), st.binary(max_size=20).map(lambda b: b.decode("latin-1"))))
def test_utc_us_never_raises(text):
    value = utc_microseconds(text)
    assert value is None or isinstance(value, int)


def _sample(n: int, ts: str, owner: str = "o-1") -> tuple:
    sample = {"schema": "chat.sample.v1", "event_id": f"e-{n}", "ts": ts, "owner": owner, "session": "s",
              "role": "patient", "text": "x"}
    return sample_row(sample, orjson.dumps(sample))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(instants, offsets, st.integers(0, 3)), min_size=1, max_size=8),
       st.lists(st.tuples(instants, offsets), min_size=1, max_size=3), st.booleans())
def test_erasure_removes_exactly_the_samples_at_or_before_the_latest_one(tmp_path_factory, rows, erasures, first):
    """Whichever form each timestamp takes, however often the person was erased (in whatever order the ledger
    entries come), and whether the ledger reaches the store before or after the samples."""
    async def check() -> None:
        samples = [_sample(n, _forms(at, off)[form], owner="o-1") for n, (at, off, form) in enumerate(rows)]
        ledger = Batch(erasures=[("o-1", _forms(at, off)[2]) for at, off in erasures])
        async with Store(tmp_path_factory.mktemp("store") / "store.sqlite") as store:
            for batch in (ledger, Batch(samples=samples)) if first else (Batch(samples=samples), ledger):
                await store.write(batch)
            kept = {row[0] for row in await store.db.execute_fetchall("SELECT event_id FROM samples")}
            assert utc_microseconds((await store.erasures())["o-1"]) == utc_microseconds(
                max(at for at, _ in erasures).isoformat())
        latest = max(at for at, _ in erasures)
        assert kept == {f"e-{n}" for n, (at, _, _) in enumerate(rows) if at > latest}

    asyncio.run(check())


def test_a_destroyed_owner_gets_no_new_key_for_an_event_appended_before_the_erasure(tmp_path):
    with KeyStore(tmp_path / "keys.sqlite") as keys:
        old = {"schema": "chat.sample.v1", "event_id": "e-1", "ts": "2026-01-01T00:00:00Z", "owner": "o", "text": "a"}
        assert seal(old, keys, appended_ms=1000) is not None
        keys.destroy("o", appended_ms=2000)
        assert seal(old, keys, appended_ms=2000) is None  # at the erasure's own millisecond: before it
        new = seal({**old, "event_id": "e-2"}, keys, appended_ms=2001)
        assert new is not None and unseal(new, keys)["text"] == "a"


instants_ms = st.integers(min_value=0, max_value=(1 << key_tree.DEPTH) - 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(instants_ms, max_size=4), st.lists(instants_ms, min_size=1, max_size=12))
def test_after_erasures_exactly_the_later_instants_keep_their_very_keys(erasures, instants):
    tree, blocks = key_tree.new_tree(), key_tree.Blocks(size=3)
    before = {t: key_tree.leaf(tree, t) for t in instants}
    assert {t: blocks.leaf("o", tree, t) for t in instants} == before
    for erased_at in erasures:
        tree = key_tree.puncture(tree, after=erased_at)
        blocks.forget("o")
    assert len(tree) <= key_tree.DEPTH
    latest = max(erasures, default=-1)
    expected = {t: before[t] if t > latest else None for t in instants}
    assert {t: key_tree.leaf(tree, t) for t in instants} == expected
    assert {t: blocks.leaf("o", tree, t) for t in instants} == expected


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.tuples(st.integers(-2, key_tree.DEPTH + 2), st.integers(-5, 1 << 50)),
                       st.binary(min_size=32, max_size=32), max_size=6), st.integers(-5, 1 << 50))
def test_any_nodes_and_instant_give_a_key_none_or_a_value_error(nodes, instant):
    try:
        key = key_tree.leaf(nodes, instant)
    except ValueError:
        assert not 0 <= instant < 1 << key_tree.DEPTH
    else:
        assert key is None or len(key) == 32


def test_a_second_erasure_cuts_the_data_given_between_the_two(tmp_path):
    with KeyStore(tmp_path / "keys.sqlite") as keys:
        sample = {"schema": "chat.sample.v1", "event_id": "e-1", "ts": "2026-01-01T00:00:00Z", "owner": "o",
                  "text": "a"}
        first = seal(sample, keys, appended_ms=1000)
        keys.destroy("o", appended_ms=2000)
        between = seal({**sample, "event_id": "e-2"}, keys, appended_ms=3000)
        later = seal({**sample, "event_id": "e-3"}, keys, appended_ms=5000)  # sealed before the erasure is applied
        keys.destroy("o", appended_ms=4000)
        keys.destroy("o", appended_ms=2500)  # an older erasure arriving late cuts nothing back in
        with KeyStore(tmp_path / "keys.sqlite") as reader:  # another process, as the trainer's run
            assert [unseal(r, reader) for r in (first, between)] == [None, None]
            assert unseal(later, reader)["text"] == "a"
        assert seal({**sample, "event_id": "e-4"}, keys, appended_ms=4000) is None


def test_a_sample_sealed_under_a_key_from_before_the_trees_is_read_until_its_owner_is_erased(tmp_path):
    import base64
    import os

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    with KeyStore(tmp_path / "keys.sqlite") as keys:
        kid, key = base64.urlsafe_b64encode(os.urandom(12)).decode(), AESGCM.generate_key(bit_length=256)
        keys._db.execute("INSERT INTO keys VALUES (?, ?, ?)", (kid, "o", key))  # as the old key store made them
        nonce = os.urandom(12)
        record = {"event_id": "e-1", "owner": "o", "kid": kid, "sealed": base64.b64encode(
            nonce + AESGCM(key).encrypt(nonce, orjson.dumps({"text": "a"}), b"e-1")).decode()}
        assert unseal(record, keys)["text"] == "a"
        assert keys.destroy("o", appended_ms=2000) == 1
        assert unseal(record, keys) is None
        assert unseal({**record, "kid": "ms:not-a-number"}, keys) is None


def _counter(family: str) -> float:
    return REGISTRY.get_sample_value("learnstream_skipped_erased_total", {"family": family}) or 0.0


@pytest.mark.kafka
async def test_in_flight_events_of_an_erased_person_are_skipped_and_later_ones_kept(make_settings, start_pipeline):
    settings = make_settings()
    # The raw topics exist (LogAppendTime) and the store runs, but nothing is anonymized yet: all is in flight.
    await start_pipeline(settings, roles=("store",))
    now = datetime.now(UTC)
    future, past = (now + timedelta(hours=3)).isoformat(), (now - timedelta(days=2)).isoformat()

    def chat(n: int, user: str, ts: str) -> dict:
        return {"schema": "chat.v1", "event_id": f"{user}-{n}", "ts": ts, "user_id": user, "session_id": f"s-{n}",
                "role": "patient", "text": f"turn {n}", "consent": {"training": True}}

    async with EventProducer(settings) as events:
        for n in range(3):  # before the erasure, with an app clock hours ahead: still erased
            await events.send(chat(n, "erase-me", future))
        await events.send(chat(9, "keep-me", future))
        await events.send({"schema": "erasure.v1", "event_id": "erase-1", "ts": past, "user_id": "erase-me"})
        await asyncio.sleep(0.05)  # a later millisecond on the broker
        for n in range(3, 5):  # after it, with an app clock days behind: new data under the new consent
            await events.send(chat(n, "erase-me", past))
    skipped_before = _counter("chat")
    await start_pipeline(settings, roles=("anonymizer",))
    owner = pseudonym(settings.key_bytes(), "user", "erase-me")

    async def settled():
        async with Store(settings.store_path) as store:
            if await store.count("chat") == 3 and await store.db.execute_fetchall(
                    "SELECT 1 FROM erasures WHERE owner = ?", (owner,)):
                return await store.skipped_count("chat", "erased")
        return None

    await wait_for(settled)
    with KeyStore(settings.keys_path) as keys:
        async with Store(settings.store_path) as store:
            stored = [s for _, s in await store.samples("chat", keys=keys)]
            skipped = await store.skipped_count("chat", "erased")
        anon = [orjson.loads(r.value) async for r in kafka.read_to_end(settings, ["chat.anon"])]
        theirs_before = [r for r in anon if r.get("owner") == owner and r.get("schema") == "chat.sample.v1"
                         and r.get("ts") == future]
        # Each in-flight event was either skipped, or sealed before the erasure under the key it destroyed.
        assert skipped + len(theirs_before) == 3
        assert all(unseal(r, keys) is None for r in theirs_before)
    assert sorted(s["text"] for s in stored if s["owner"] == owner) == ["turn 3", "turn 4"]
    assert [s["text"] for s in stored if s["owner"] != owner] == ["turn 9"]
    # One count, one name: the metric counts exactly what the status' skipped_erased reads from the store.
    assert _counter("chat") - skipped_before == skipped
    # The ledger erases up to the erasure request's append time on the broker, not the app's ts.
    ledger = next(r for r in anon if r.get("schema") == "erasure.ledger.v1")
    request = [r async for r in kafka.read_to_end(settings, ["erasure.requests"])][0]
    assert ledger["ts"] == past and datetime.fromisoformat(ledger["erased_at"]) == datetime.fromtimestamp(
        request.timestamp / 1000, UTC)


async def _run_until(stage, condition) -> None:
    await stage.start()
    task = asyncio.create_task(stage.run())
    try:
        await wait_for(condition)
    finally:
        await stage.stop()
        await task


@pytest.mark.kafka
async def test_an_event_appended_after_the_erasure_but_anonymized_before_it_is_applied_stays_readable(
        make_settings, start_pipeline):
    """Two anonymizers, one reading only chat.raw and one only erasure.requests, make the order the broker's
    partitions allow: the event appended after the erasure request is sealed before the erasure is applied."""
    from consumers.anonymizer import AnonymizerService
    from learnstream import topics

    class ChatOnly(AnonymizerService):
        source_topics, group_id = (topics.raw("chat"),), "anonymizer-chat"

    class ErasureOnly(AnonymizerService):
        source_topics, group_id = (topics.ERASURE_REQUESTS,), "anonymizer-erasure"

    settings = make_settings()
    await start_pipeline(settings, roles=("store",))
    owner = pseudonym(settings.key_bytes(), "user", "returns")
    now = datetime.now(UTC).isoformat()

    def chat(n: int) -> dict:
        return {"schema": "chat.v1", "event_id": f"returns-{n}", "ts": now, "user_id": "returns",
                "session_id": f"s-{n}", "role": "patient", "text": f"turn {n}", "consent": {"training": True}}

    async with EventProducer(settings) as events:
        await events.send(chat(0))  # before the erasure: erased
        await asyncio.sleep(0.05)
        await events.send({"schema": "erasure.v1", "event_id": "erase-1", "ts": now, "user_id": "returns"})
        await asyncio.sleep(0.05)  # a later millisecond on the broker
        await events.send(chat(1))  # after it: new data under the new consent

    async def stored_both() -> bool:
        async with Store(settings.store_path) as store:
            return await store.count("chat") == 2

    await _run_until(ChatOnly(settings), stored_both)  # both sealed and stored before the erasure is applied

    async def erased() -> bool:
        async with Store(settings.store_path) as store:
            return owner in await store.erasures() and await store.count("chat") == 1

    await _run_until(ErasureOnly(settings), erased)
    with KeyStore(settings.keys_path) as keys:
        async with Store(settings.store_path) as store:
            stored = [s["text"] for _, s in await store.samples("chat", keys=keys)]
        anon = [orjson.loads(r.value) async for r in kafka.read_to_end(settings, ["chat.anon"])]
        before = [r for r in anon if r.get("event_id") == pseudonym(settings.key_bytes(), "event", "returns-0")]
        assert len(before) == 1 and unseal(before[0], keys) is None  # shredded on the topic too
    assert stored == ["turn 1"]


async def test_an_erasure_makes_a_from_scratch_run_due_only_when_a_model_saw_its_samples(make_settings):
    """The trainer's decision (no broker needed until it runs): due when the lowest erased id is within what was
    trained or is being trained; still due after a restart; done only by a from-scratch run started after it."""
    from learnstream.training_state import TrainerState
    from trainer.service import TrainerService

    settings = make_settings(auto_train=False)
    state = TrainerState(settings.data_dir)
    state.record_run({"family": "chat", "version": 1, "decision": "promoted", "samples": 8, "metrics": {},
                      "path": "chat/1", "watermark": 8}, registry_dir=settings.registry_dir)
    scheduled = []
    trainers = []

    def trainer_on(settings) -> TrainerService:
        trainer = TrainerService(settings)
        trainer.schedule = lambda family, *, from_scratch, **_: scheduled.append((family, from_scratch))
        trainers.append(trainer)
        return trainer

    try:
        trainer = trainer_on(settings)
        trainer._on_erasure("chat", 9)  # never trained on: nothing to redo
        await trainer._maybe_train("chat")
        assert scheduled == [] and state.erasures_pending("chat") == 0
        trainer._training_up_to["chat"] = 12  # a run in progress reads up to 12
        trainer._on_erasure("chat", 10)
        del trainer._training_up_to["chat"]
        await trainer._maybe_train("chat")  # whatever auto_train says
        assert scheduled == [("chat", True)]
        await trainer_on(settings)._maybe_train("chat")  # a restarted trainer: still due
        assert scheduled == [("chat", True)] * 2
        covered = state.erasures_total("chat")
        state.retrained_after("chat", covered - 1)  # a from-scratch run that started before the erasure
        assert state.erasures_pending("chat") == 1
        state.retrained_after("chat", covered)
        assert state.erasures_pending("chat") == 0
        state.erasure_seen("chat")
        off = trainer_on(make_settings(data_dir=settings.data_dir, auto_train=False, retrain_after_erasure=False))
        await off._maybe_train("chat")
        assert len(scheduled) == 2
    finally:
        for trainer in trainers:  # never started: closing them is all there is
            await trainer._consumer.stop()
            await trainer._producer.stop()
