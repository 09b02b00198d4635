"""Dead-letter queues on the real broker: hostile payloads on every consumed topic end in its DLQ with a reason,
counted, while the odd-but-valid events around them are stored intact and nothing stalls; then `learnstream dlq
list` shows the entries and `learnstream dlq redrive` sends them back after a fix."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import orjson
import pytest
from prometheus_client import REGISTRY

from consumers import dlq
from learnstream.pseudonym import pseudonym
from learnstream.store import Store
from producers.sdk import EventProducer
from tests.procs import run_cli
from tests.test_pipeline import chat_event, stored_at_least, stored_samples, wait_for

pytestmark = pytest.mark.kafka


def nested(depth: int) -> bytes:
    return b'{"schema": "chat.v1", "deep": ' + b"[" * depth + b"]" * depth + b"}"


def image_event(**fields) -> dict:
    return {"schema": "image.v1", "event_id": "img-e1", "ts": "2026-11-01T10:00:00Z", "user_id": "u-7",
            "image_id": "img-1", "embedding": [0.1, 0.2], "consent": {"training": True}, **fields}


def variant(**fields) -> bytes:
    return orjson.dumps({**chat_event(1), **fields})


def without(name: str) -> bytes:
    return orjson.dumps({k: v for k, v in chat_event(1).items() if k != name})


# (topic, raw bytes, the reason its DLQ entry must give)
HOSTILE = [
    ("chat.raw", b"\xff\xfe{}", "invalid_utf8"),
    ("chat.raw", b'{"schema": "chat.v1", "text": "unterminated', "invalid_json"),
    ("chat.raw", b'["an", "array"]', "not_an_object"),
    ("chat.raw", nested(20), "too_deep"),
    ("chat.raw", nested(100_000), "too_deep"),  # past the JSON parser's own limit
    ("chat.raw", variant(schema="chat.v7"), "unknown_schema"),
    ("chat.raw", variant(schema="image.v1"), "unknown_schema"),  # valid elsewhere, not on this topic
    ("chat.raw", without("schema"), "missing_field"),
    ("chat.raw", without("user_id"), "missing_field"),
    ("chat.raw", without("consent"), "missing_consent"),
    ("chat.raw", variant(consent=None), "missing_consent"),
    ("chat.raw", variant(role=5), "wrong_type"),
    ("chat.raw", variant(text=["not", "text"]), "wrong_type"),
    ("chat.raw", variant(consent={"training": "yes"}), "wrong_type"),
    ("chat.raw", variant(mood={"score": "high"}), "wrong_type"),  # optional fields are checked too
    ("chat.raw", variant(assessment={"phq9": 4.5}), "wrong_type"),
    ("chat.raw", variant(event_id=""), "invalid_value"),
    ("chat.raw", variant(ts="yesterday"), "invalid_value"),
    ("chat.raw", variant(role="doctor"), "invalid_value"),
    ("chat.raw", b"{" + b" " * (600 * 1024) + b"}", "oversize"),
    ("image.raw", orjson.dumps(image_event(embedding=["a"])), "wrong_type"),
    ("image.raw", orjson.dumps(image_event(faces=[{"embedding": [0.1], "box": [1, 2]}])), "invalid_value"),
    ("image.raw", orjson.dumps(image_event(tags="portrait")), "wrong_type"),
    ("image.raw", b"\x00\x01\x02", "invalid_json"),
    ("erasure.requests", b'{"schema": "erasure.v1", "ts": "2026-11-01T10:00:00Z", "user_id": "u"}', "missing_field"),
    ("chat.anon", b"not an anonymized record", "invalid_record"),  # the dataset topic is guarded as well
    ("chat.anon", b'{"schema": "chat.sample.v9", "event_id": "x"}', "unknown_schema"),
]

ODD_BUT_VALID = [
    "I feel 😔😔 today 🌧️ and my family 👨‍👩‍👧 does not see it 🫠",
    "mixed \u200fright-to-left\u200e marks and a\u200dzero width joiner",
    "tabs\tand\nline breaks\r\nand a bell \x07 a nul \x00 and an escape \x1b[31m",
    "'; DROP TABLE samples; -- \" OR 1=1; SELECT * FROM erasures",
    "<script>alert('x')</script><b>bold</b> &amp; &lt;tag&gt; <!-- comment -->",
    "combining e\u0301 and z\u0351\u0352\u0353 and \U0010fffd fine",
    '{"schema": "chat.v1", "event_id": "inside a text"} and \\u0000 literally',
    "",
]
# Valid text that names no one: the anonymizer must pass it unchanged (other scripts, words no list holds,
# mathematical letters).
NAMES_NO_ONE = [
    "أشعر بالقلق طوال اليوم ولا أستطيع النوم",  # every word of a caseless script becomes a PERSON
    "אני מרגיש עצוב ועייף כל הזמן",
    "Я очень устал",
    "tabs and newlines and a bell",  # "newlines" taken for a name
    "I 𝖋𝖊𝖊𝖑 fine",  # mathematical letters
]


def dlq_count(topic: str, reason: str) -> float:
    return REGISTRY.get_sample_value("learnstream_dlq_total", {"topic": topic, "reason": reason}) or 0.0


async def test_hostile_payloads_land_in_the_dlq_and_odd_valid_text_is_stored_intact(make_settings, start_pipeline):
    settings = make_settings()  # with the NER model: odd text must pass the real anonymizer unchanged
    await start_pipeline(settings, roles=("anonymizer", "store"))
    expected: dict[tuple[str, str], int] = {}
    for topic, _, reason in HOSTILE:
        expected[topic, reason] = expected.get((topic, reason), 0) + 1
    before = {key: dlq_count(*key) for key in expected}
    # A valid event after each hostile one (nothing may stall behind the bad), each with its own id.
    valid = [chat_event(n, session="odd", text=ODD_BUT_VALID[n % len(ODD_BUT_VALID)])
             for n in range(max(len(HOSTILE), len(ODD_BUT_VALID)))]
    async with EventProducer(settings) as events:
        for n, (topic, raw, _) in enumerate(HOSTILE):
            await events.send_raw(topic, raw, key=b"hostile")
            await events.send(valid[n])
        for event in valid[len(HOSTILE):]:
            await events.send(event)
    await wait_for(lambda: stored_at_least(settings, len(valid)), timeout=120)
    stored = {s["event_id"]: s["text"] for s in await stored_samples(settings)}
    async with Store(settings.store_path) as store:
        by_reason = await wait_for(lambda: _dlq_total(store, sum(1 for t, _, _ in HOSTILE if "erasure" not in t)))
    key = settings.key_bytes()
    assert stored == {pseudonym(key, "event", e["event_id"]): e["text"] for e in valid}
    assert by_reason == _by_reason(expected, exclude="erasure")  # each once: the index dedupes redeliveries
    # The metric, by reason: at least once each (a redelivered batch would count its entries again).
    assert all(dlq_count(*key) - before[key] >= n for key, n in expected.items())

    entries = [failure.entry for topic in ("chat.raw.dlq", "erasure.requests.dlq")
               for failure in [item async for item in dlq.read(settings, topic)]]
    for entry in entries:
        assert entry["source"]["topic"] in ("chat.raw", "erasure.requests") and entry["source"]["offset"] >= 0
        assert entry["reason"] and entry["ts"] and entry["sha256"] and entry["length"] > 0
    payloads = {dlq.original_bytes(e) for e in entries if not e["truncated"]}
    assert {raw for topic, raw, reason in HOSTILE if topic in ("chat.raw", "erasure.requests")
            and reason != "oversize"} <= payloads  # the original bytes, base64 when they are not UTF-8
    assert next(e for e in entries if e["reason"] == "invalid_utf8")["payload_b64"]


async def _dlq_total(store: Store, count: int) -> dict | None:
    reasons: dict[str, int] = {}
    for family in ("chat", "image"):
        for reason, n in (await store.dlq_by_reason(family)).items():
            reasons[reason] = reasons.get(reason, 0) + n
    return reasons if sum(reasons.values()) >= count else None


def _by_reason(expected: dict[tuple[str, str], int], *, exclude: str) -> dict[str, int]:
    totals: dict[str, int] = {}
    for (topic, reason), n in expected.items():
        if exclude not in topic:
            totals[reason] = totals.get(reason, 0) + n
    return totals


async def test_dlq_list_then_redrive_after_the_limit_is_raised(make_settings, start_pipeline):
    settings = make_settings(max_event_bytes=2048, ner_model="")
    pipeline = await start_pipeline(settings, roles=("anonymizer", "store"))
    big = chat_event(1, text="a long but honest message " * 100)  # ~2.7 KB: over the first limit
    async with EventProducer(settings) as events:
        await events.send_raw("chat.raw", orjson.dumps(big), key=b"s-1")
        await events.send_raw("chat.raw", b"\xff not utf-8", key=b"s-2")
    async with Store(settings.store_path) as store:
        await wait_for(lambda: _dlq_total(store, 2))
    listed = [json.loads(line) for line in
              (await asyncio.to_thread(run_cli, settings, "dlq", "list", "--topic", "chat.raw")).stdout.splitlines()]
    assert sorted(e["reason"] for e in listed) == ["invalid_utf8", "oversize"]
    assert all(e["topic"] == "chat.raw.dlq" and e["source"]["topic"] == "chat.raw" for e in listed)

    # Redriven before the fix, it fails again: the same failure (counted once), outstanding again.
    done = await asyncio.to_thread(run_cli, settings, "dlq", "redrive", "--topic", "chat.raw", "--reason", "oversize")
    assert "redriven 1" in done.stderr
    again = await wait_for(lambda: _failed_again(settings))
    assert again.outstanding and again.entry["redrive"]["generation"] == 1
    async with Store(settings.store_path) as store:
        assert await wait_for(lambda: _dlq_total(store, 2)) == {"invalid_utf8": 1, "oversize": 1}

    await pipeline.stop()  # the fix: a higher limit, then the entries go back
    raised = dataclasses.replace(settings, max_event_bytes=8192)
    await start_pipeline(raised, roles=("anonymizer", "store"))
    done = await asyncio.to_thread(run_cli, raised, "dlq", "redrive", "--topic", "chat.raw", "--reason", "oversize")
    assert "redriven 1" in done.stderr
    await wait_for(lambda: stored_at_least(settings, 1))
    [sample] = await stored_samples(settings)
    assert sample["event_id"] == pseudonym(settings.key_bytes(), "event", big["event_id"])
    assert sample["text"] == big["text"]
    # Marked: no longer listed, counted or redriven (only with --all, as not outstanding).
    async with Store(settings.store_path) as store:
        assert await wait_for(lambda: _redriven(store)) == {"oversize": 1}
        assert await store.dlq_by_reason("chat") == {"invalid_utf8": 1}
    listed = (await asyncio.to_thread(run_cli, raised, "dlq", "list", "--topic", "chat.raw")).stdout.splitlines()
    assert [json.loads(line)["reason"] for line in listed] == ["invalid_utf8"]
    every = (await asyncio.to_thread(run_cli, raised, "dlq", "list", "--topic", "chat.raw", "--all")).stdout
    assert sorted((e["reason"], e["outstanding"]) for e in map(json.loads, every.splitlines())) == [
        ("invalid_utf8", True), ("oversize", False)]
    done = await asyncio.to_thread(run_cli, raised, "dlq", "redrive", "--topic", "chat.raw", "--reason", "oversize")
    assert "redriven 0" in done.stderr


async def _failed_again(settings) -> dlq.Failure | None:
    async for failure in dlq.read(settings, "chat.raw.dlq", reason="oversize"):
        if failure.failed == 1:
            return failure
    return None


async def _redriven(store: Store) -> dict[str, int] | None:
    return await store.dlq_by_reason("chat", redriven=True) or None


@pytest.fixture(scope="module")
def text_anonymizer():
    from learnstream.pii import TextAnonymizer

    return TextAnonymizer(key=b"test-key")


@pytest.mark.parametrize("text", NAMES_NO_ONE)
def test_valid_text_that_names_no_one_passes_the_anonymizer_unchanged(text_anonymizer, text):
    assert text_anonymizer.anonymize(text, "a conversation") == text
