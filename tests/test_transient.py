"""Transient means retriable: a key store SQLite cannot write to for now holds its events back (none dead-lettered,
no offset committed) until it can, then every one is stored once; a Kafka refusal no retry mends stops the stage
with one line instead of looping."""

from __future__ import annotations

import asyncio
import sqlite3

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (KafkaConnectionError, KafkaError, KafkaTimeoutError, MessageSizeTooLargeError,
                             TopicAuthorizationFailedError)
from prometheus_client import REGISTRY

from consumers.anonymizer import AnonymizerService
from consumers.privacy import Anonymizer
from consumers.store_writer import StoreWriterService
from learnstream import kafka, topics
from learnstream.keystore import KeyStore
from learnstream.pseudonym import pseudonym
from learnstream.store import Store
from learnstream.transient import is_fatal, is_transient
from producers.sdk import EventProducer
from tests.procs import RoleProcess
from tests.test_pipeline import chat_event, stored_at_least, wait_for

LOCK_WAIT_S = 0.2  # the test key store's busy timeout: each locked attempt fails after this long


def _locked_database(path) -> sqlite3.Connection:
    """Another connection holding the write lock, as a backup or a second writer would."""
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    return locker


def test_sqlite_busy_and_read_only_are_transient_and_kafka_refusals_are_fatal(tmp_path):
    path = tmp_path / "keys.sqlite"
    keys = KeyStore(path, busy_timeout_s=LOCK_WAIT_S)
    locker = _locked_database(path)
    with pytest.raises(sqlite3.OperationalError) as busy:
        keys.key_for_owner("u_1")
    locker.execute("ROLLBACK")
    keys._db.execute("PRAGMA query_only=ON")  # SQLite's own read-only refusal
    with pytest.raises(sqlite3.OperationalError) as read_only:
        keys.destroy("u_1")
    with pytest.raises(sqlite3.OperationalError) as not_a_table:
        keys._db.execute("SELECT * FROM no_such_table")
    keys.close()
    assert is_transient(busy.value) and is_transient(read_only.value) and not is_transient(not_a_table.value)
    for passing in (KafkaConnectionError(), KafkaTimeoutError(), KafkaError("Unable to get cluster metadata")):
        assert is_transient(passing) and not is_fatal(passing)
    for refused in (TopicAuthorizationFailedError(), MessageSizeTooLargeError()):
        assert is_fatal(refused) and not is_transient(refused)


def _retries(group: str) -> float:
    return REGISTRY.get_sample_value("learnstream_transient_retries_total", {"group": group, "cause": "sqlite"}) or 0


async def _records(settings, topic: str) -> list:
    return [record async for record in kafka.read_to_end(settings, [topic])]


@pytest.mark.kafka
@pytest.mark.parametrize("locked", ["key store", "store"])
async def test_a_locked_database_holds_events_back_until_it_recovers(make_settings, locked):
    settings = make_settings(ner_model="")
    keys = KeyStore(settings.keys_path, busy_timeout_s=LOCK_WAIT_S)
    anonymizer = AnonymizerService(settings, anonymizer=Anonymizer(
        key=settings.key_bytes(), ner_model=None, max_event_bytes=settings.max_event_bytes, keys=keys))
    writer = StoreWriterService(settings)
    writer.store = Store(settings.store_path, busy_timeout_s=LOCK_WAIT_S)
    group, path = ("anonymizer", settings.keys_path) if locked == "key store" else ("store-writer",
                                                                                   settings.store_path)
    dlqs = [topics.dlq(t) for t in (topics.raw("chat"), topics.ERASURE_REQUESTS, topics.anon("chat"))]
    events = [chat_event(n, session=f"s-{n % 4}") for n in range(40)]
    async with anonymizer, writer:
        running = [asyncio.create_task(anonymizer.run()), asyncio.create_task(writer.run())]
        locker = _locked_database(path)
        try:
            retries_before = _retries(group)
            async with EventProducer(settings) as producer:
                for event in events:
                    await producer.send(event, wait=False)
                await producer.send({"schema": "erasure.v1", "event_id": "erase-1", "ts": "2026-11-01T12:00:00Z",
                                     "user_id": "u-gone"})
                await producer.flush()

            async def retried() -> bool:
                return _retries(group) >= retries_before + 3

            await wait_for(retried, timeout=30)
            stalled = anonymizer if locked == "key store" else writer
            assert stalled.waiting_on() == "sqlite: OperationalError"
            for dlq in dlqs:
                assert await _records(settings, dlq) == [], "a transient failure was dead-lettered"
            if locked == "key store":
                assert await _records(settings, topics.anon("chat")) == []
            assert not any(task.done() for task in running)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert await wait_for(lambda: stored_at_least(settings, len(events)), timeout=60) == len(events)


        async def recovered() -> bool:
            return stalled.waiting_on() is None

        await wait_for(recovered, timeout=10)  # once the batch's persist returned
        key = settings.key_bytes()
        async with Store(settings.store_path) as store:
            await wait_for(store.erased_owners)
            assert await store.erased_owners() == {pseudonym(key, "user", "u-gone")}
            ids = [row[0] for row in await (await store.db.execute("SELECT event_id FROM samples")).fetchall()]
        assert sorted(ids) == sorted(pseudonym(key, "event", e["event_id"]) for e in events)
        for dlq in dlqs:
            assert await _records(settings, dlq) == []
        await anonymizer.stop()
        await writer.stop()
        await asyncio.gather(*running)
    keys.close()


@pytest.mark.kafka
async def test_a_record_too_large_for_its_topic_stops_the_stage_with_one_line(make_settings, tmp_path):
    settings = make_settings(ner_model="")
    admin = AIOKafkaAdminClient(**kafka.client_kwargs(settings))
    await admin.start()
    try:  # an operator's limit on the dataset of record, which a long message exceeds
        await admin.create_topics([NewTopic(topics.prefixed(settings, topics.anon("chat")), 1, 1,
                                            topic_configs={"max.message.bytes": "2000"})])
    finally:
        await admin.close()
    await kafka.ensure_topics(settings)  # the rest
    async with EventProducer(settings) as producer:
        await producer.send(chat_event(1, text="a long message " * 400))
    role = RoleProcess(settings, "anonymizer", log_path=tmp_path / "up.log")
    role.start()
    try:
        code = await asyncio.to_thread(role.process.wait, 90)
    finally:
        role.stop()
    last = role.log_tail().strip().splitlines()[-1]
    assert code == 1 and last.startswith("learnstream: anonymizer stopped: Kafka refused with "
                                         "MessageSizeTooLargeError"), role.log_tail()
    assert "Traceback" not in role.log_tail()
    assert await _records(settings, topics.dlq(topics.raw("chat"))) == []
    assert orjson.loads((await _records(settings, topics.raw("chat")))[0].value)["event_id"] == "e-s-1-1"
