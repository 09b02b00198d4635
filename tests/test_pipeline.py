"""Producer -> anonymizer -> store on the real broker: stored once, bad events in the DLQ, no consent counted."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka.errors import KafkaError

from learnstream import kafka, topics
from learnstream.keystore import KeyStore
from learnstream.store import Store
from producers.sdk import EventProducer
from schemas import InvalidEvent

pytestmark = pytest.mark.kafka


def chat_event(n: int, *, session: str = "s-1", consent: bool = True, text: str | None = None) -> dict:
    return {"schema": "chat.v1", "event_id": f"e-{session}-{n}", "ts": f"2026-11-01T10:{n // 60:02d}:{n % 60:02d}Z",
            "user_id": "u-alice", "session_id": session, "role": "patient" if n % 2 == 0 else "therapist",
            "text": text or f"message {n}: I felt anxious on Monday", "consent": {"training": consent}}


async def wait_for(predicate, *, timeout: float = 60.0, every: float = 0.2):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(every)


async def stored(settings, family: str = "chat") -> int:
    if not settings.store_path.exists():  # the store role has not created it yet
        return 0
    async with Store(settings.store_path) as store:
        return await store.count(family)


async def stored_at_least(settings, n: int, family: str = "chat") -> int | None:
    """For wait_for: the family's stored count once it is at least n."""
    count = await stored(settings, family)
    return count if count >= n else None


async def stored_samples(settings, family: str = "chat") -> list[dict]:
    """The family's stored samples, unsealed, in store order."""
    with KeyStore(settings.keys_path) as keys:
        async with Store(settings.store_path) as store:
            return [sample for _, sample in await store.samples(family, keys=keys)]


async def test_events_are_anonymized_and_stored_once(make_settings, start_pipeline):
    settings = make_settings()
    await start_pipeline(settings, roles=("anonymizer", "store"))
    async with EventProducer(settings) as events:
        for n in range(20):
            await events.send(chat_event(n, text=f"Call me on 07700 900{n:03d} please"), wait=False)
        for n in range(5):  # the same events again: an app retry must not store twice
            await events.send(chat_event(n, text=f"Call me on 07700 900{n:03d} please"), wait=False)
        await events.send(chat_event(99, consent=False))
        await events.flush()
    assert await wait_for(lambda: stored_at_least(settings, 20)) == 20
    samples = await stored_samples(settings)
    async with Store(settings.store_path) as store:
        await wait_for(lambda: store.skipped_count("chat"))
        assert await store.skipped_count("chat") == 1
    assert len({s["event_id"] for s in samples}) == 20
    for sample in samples:
        assert "07700" not in sample["text"] and "[PHONE_" in sample["text"]
        assert sample["owner"].startswith("u_") and "alice" not in orjson.dumps(sample).decode()
        assert set(sample) <= {"schema", "event_id", "ts", "owner", "session", "role", "text", "mood", "assessment",
                               "appended_at"}


async def test_bad_events_go_to_the_dlq_and_the_consumer_keeps_going(make_settings, start_pipeline):
    settings = make_settings()
    pipeline = await start_pipeline(settings, roles=("anonymizer", "store"))
    bad = [b"\xff\xfe", b"{not json", b"[1]", orjson.dumps({**chat_event(1), "schema": "chat.v7"}),
           orjson.dumps({**chat_event(2), "consent": None}), orjson.dumps({**chat_event(3), "role": 5}),
           b"x" * (settings.max_event_bytes + 1)]
    async with EventProducer(settings) as events:
        for raw in bad:
            await events.send_raw("chat.raw", raw, key=b"k")
        await events.send(chat_event(10))
    assert await wait_for(lambda: stored_at_least(settings, 1)) == 1
    async with Store(settings.store_path) as store:
        reasons = await wait_for(lambda: _dlq_complete(store, len(bad)))
    assert reasons == {"invalid_utf8": 1, "invalid_json": 1, "not_an_object": 1, "unknown_schema": 1,
                       "missing_consent": 1, "wrong_type": 1, "oversize": 1}
    from consumers import dlq

    entries = [failure.entry async for failure in dlq.read(settings, "chat.raw.dlq")]
    oversize = next(e for e in entries if e["reason"] == "oversize")
    assert oversize["truncated"] and oversize["length"] == settings.max_event_bytes + 1
    assert len(oversize["payload"]) == dlq.KEEP_BYTES
    assert next(e for e in entries if e["reason"] == "invalid_utf8")["payload_b64"] == "//4="
    assert pipeline.serving is None


async def _dlq_complete(store: Store, expected: int) -> dict | None:
    reasons = await store.dlq_by_reason("chat")
    return reasons if sum(reasons.values()) >= expected else None


async def test_redelivery_stores_nothing_twice(make_settings, start_pipeline):
    """A store writer that crashes after its SQLite commit but before its offset commit gets the batch again."""
    settings = make_settings()
    await start_pipeline(settings, roles=("anonymizer", "store"))
    async with EventProducer(settings) as events:
        for n in range(10):
            await events.send(chat_event(n), wait=False)
    await wait_for(lambda: stored_at_least(settings, 10))
    # A second store writer group re-reads chat.anon from the start: every record is a redelivery.
    from consumers.store_writer import StoreWriterService

    class Rereader(StoreWriterService):
        group_id = "store-writer-reread"

    async with Rereader(settings) as rereader:
        task = asyncio.create_task(rereader.run())
        await asyncio.sleep(3)
        await rereader.stop()
        await task
    assert await stored(settings) == 10


async def test_sdk_refuses_invalid_events_before_sending(make_settings):
    async with EventProducer(make_settings()) as events:
        with pytest.raises(InvalidEvent):
            await events.send({**chat_event(1), "text": None})


async def test_send_all_puts_each_record_where_send_would(make_settings):
    """The anonymizer's batched sends keep the partitioning every other producer of a key gets, in order."""
    settings = make_settings(partitions=4)
    await kafka.ensure_topics(settings)
    topic = topics.prefixed(settings, topics.anon("chat"))
    records = [(topic, f"session-{n % 37}".encode(), f"value-{n}".encode()) for n in range(600)]
    async with kafka.producer(settings) as producer:
        await kafka.send_all(producer, records)
        expected = {key: (await producer.send_and_wait(topic, b"probe", key=key)).partition
                    for key in {key for _, key, _ in records}}
    received = [r async for r in kafka.read_to_end(settings, [topics.anon("chat")]) if r.value != b"probe"]
    assert len(received) == len(records)
    assert all(r.partition == expected[r.key] for r in received)
    by_key = {}
    for record in sorted(received, key=lambda r: (r.partition, r.offset)):
        by_key.setdefault(record.key, []).append(int(record.value.split(b"-")[1]))
    assert all(values == sorted(values) for values in by_key.values())


async def test_ensure_topics_fails_loudly_when_the_broker_refuses_a_topic(make_settings):
    settings = make_settings(replication_factor=3)  # one broker cannot hold three replicas
    with pytest.raises(KafkaError, match="InvalidReplicationFactor"):
        await kafka.ensure_topics(settings)
