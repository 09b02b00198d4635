"""Records on the topics stages read from each other are hostile input too: whatever bytes or JSON arrive on
model.updated, a DLQ or an *.anon topic, the decoder answers with a value or InvalidEvent, never another error;
and a listener fed poison on the real broker goes on to swap to the next good version."""

from __future__ import annotations

import asyncio
import json

import orjson
import pytest
from hypothesis import given, settings as hypothesis_settings
from hypothesis import strategies as st

from consumers.dlq import index_row
from consumers.store_writer import sort_record
from learnstream import kafka, topics
from learnstream.registry import model_updated_event
from learnstream.store import Batch
from learnstream.config import Settings
from schemas import INTERNAL_TOPIC_SCHEMAS, RAW_TOPIC_SCHEMAS, InvalidEvent, decode, parse, parse_internal, validate_dlq_entry
from serving.holders import ModelHolder
from serving.session_risk import SessionRisk
from serving.updates import ModelUpdates
from tests.test_registry import LoadedModel, commit, registry_with_base, wait_until

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Objects shaped like the real records, with any value in any field: the decoders' likeliest poison.
FIELDS = ["schema", "event_id", "ts", "owner", "family", "reason", "source", "partition", "offset", "topic",
          "version", "path", "decision", "manifest_sha256", "session", "sealed", "kid", "watermark", "added",
          "erased", "erased_from", "from_scratch", "category", "score", "layer", "user_id"]
SCHEMA_NAMES = ["skip.v1", "erasure.ledger.v1", "chat.sample.v1", "model.updated.v1", "samples.stored.v1",
                "training.request.v1", "safety.flag.v1", "safety.cleared.v1", "erasure.v1"]
SHAPED = st.dictionaries(st.sampled_from(FIELDS), JSON | st.sampled_from(
    [*SCHEMA_NAMES, "2026-01-01T00:00:00Z", "chat", "promoted", "chat/1", "session"]), max_size=8)
def _encode(value) -> bytes:
    return json.dumps(value).encode()  # not orjson: it refuses integers past 64 bits, which a record may carry


ANY_RECORD = st.binary(max_size=200) | JSON.map(_encode) | SHAPED.map(_encode)


def _decodes_or_refuses(decode, raw: bytes) -> None:
    try:
        decode(raw)
    except InvalidEvent:
        pass


@hypothesis_settings(max_examples=300, deadline=None)
@given(ANY_RECORD, st.sampled_from(["chat.anon", "image.anon", "chat.raw.dlq", "chat.anon.dlq"]))
def test_the_store_writer_decodes_or_refuses_any_record(raw, topic):
    _decodes_or_refuses(lambda body: sort_record(Batch(), topic, body), raw)


@hypothesis_settings(max_examples=300, deadline=None)
@given(ANY_RECORD)
def test_model_updated_and_dlq_decoders_decode_or_refuse_anything(raw):
    _decodes_or_refuses(lambda body: parse(body, expected=("model.updated.v1",)), raw)
    _decodes_or_refuses(lambda body: index_row("chat.raw.dlq", validate_dlq_entry(decode(body))), raw)


@hypothesis_settings(max_examples=300, deadline=None)
@given(ANY_RECORD, st.sampled_from(sorted(INTERNAL_TOPIC_SCHEMAS)))
def test_the_decoder_of_every_topic_without_a_dlq_decodes_or_refuses_anything(raw, topic):
    """samples.stored and training.requests (the trainer), model.updated and safety.flags (serving)."""
    try:
        event = parse_internal(topic, raw)
    except InvalidEvent:
        return
    assert event["schema"] in INTERNAL_TOPIC_SCHEMAS[topic]
    if topic == topics.SAFETY_FLAGS:
        SessionRisk(sticky_s=60).apply(event)  # what the follower does with it: a valid event always applies


@hypothesis_settings(max_examples=300, deadline=None)
@given(ANY_RECORD)
def test_the_erasure_requests_decoder_decodes_or_refuses_anything(raw):
    _decodes_or_refuses(lambda body: parse(body, expected=RAW_TOPIC_SCHEMAS["erasure"]), raw)


@hypothesis_settings(max_examples=200, deadline=None)
@given(ANY_RECORD | SHAPED.map(lambda fields: {**fields, "schema": "model.updated.v1"}).map(_encode))
def test_the_model_updated_listener_refuses_anything_without_raising(tmp_path_factory, raw):
    registry = registry_with_base(tmp_path_factory.mktemp("registry"))
    holder = ModelHolder("chat", registry, load=LoadedModel)

    async def apply() -> bool:
        updates = ModelUpdates(Settings(bootstrap_servers="127.0.0.1:1", dev=True), {"chat": holder})
        try:
            return await updates.apply(raw)  # never started: apply needs no broker
        finally:
            await updates.stop()

    assert asyncio.run(apply()) is False


def test_a_dlq_entry_with_an_offset_that_is_not_a_number_is_refused_not_raised():
    entry = {"reason": "wrong_type", "ts": "2026-01-01T00:00:00Z",
             "source": {"topic": "chat.raw", "partition": 0, "offset": "12a"}}
    with pytest.raises(InvalidEvent):
        index_row("chat.raw.dlq", entry)
    assert index_row("chat.raw.dlq", {**entry, "source": {**entry["source"], "offset": 12}})[2] == 12


@pytest.mark.kafka
async def test_poison_on_model_updated_does_not_end_the_listener(make_settings):
    settings = make_settings()
    await kafka.ensure_topics(settings)
    registry = registry_with_base(settings.registry_dir)
    good = commit(registry)
    holder = ModelHolder("chat", registry, load=LoadedModel)
    poison = [b"null", b"[]", b"\xff\xfe", b'{"schema": "model.updated.v1"}',
              orjson.dumps({**model_updated_event(good, decision="promoted", reason="t"), "path": "chat/\u00b2"})]
    async with ModelUpdates(settings, {"chat": holder}) as updates:
        listening = asyncio.create_task(updates.run())
        try:
            producer = kafka.producer(settings)
            await producer.start()
            try:
                for raw in poison:  # as an outside client would send them (no key, any bytes)
                    await producer.send_and_wait(topics.prefixed(settings, topics.MODEL_UPDATED), raw)
                await producer.send_and_wait(topics.prefixed(settings, topics.MODEL_UPDATED),
                                             orjson.dumps(model_updated_event(good, decision="promoted", reason="t")))
            finally:
                await producer.stop()
            await wait_until(lambda: holder.version == good.number, timeout=30, what="the swap after the poison")
            assert not listening.done()
        finally:
            await updates.stop()
            await listening
