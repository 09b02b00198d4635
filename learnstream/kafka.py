"""Kafka clients built from Settings: the same bootstrap, security and topic prefix everywhere."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import ssl
from typing import Any, AsyncIterator

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from aiokafka.partitioner import murmur2

from learnstream.config import ConfigError, Settings
from learnstream.secret import reveal
from learnstream.topics import all_specs, default_replication, min_insync, prefixed

log = logging.getLogger(__name__)

# How often describe_group asks again while a fresh broker's group coordinator loads (some hundred ms): `replay`
# asks before it starts, and a longer pause would be most of a small replay's time.
COORDINATOR_RETRY_S = 0.1


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection settings shared by producers, consumers and the admin client (TLS and SASL pass through)."""
    if not settings.bootstrap_servers:
        raise ConfigError("no Kafka bootstrap address (start the local broker or set KAFKA_BOOTSTRAP_SERVERS)")
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = ssl.create_default_context(cafile=settings.ssl_cafile)
    if settings.security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = settings.sasl_mechanism or "PLAIN"
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = reveal(settings.sasl_password)
    return kwargs


def producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """Idempotent, acks=all: a retried send is written once, and only acknowledged when fully replicated."""
    options: dict[str, Any] = {"acks": "all", "enable_idempotence": True, "linger_ms": 5}
    options.update(overrides)
    return AIOKafkaProducer(**client_kwargs(settings), **options)


async def send_all(producer: AIOKafkaProducer, records: list[tuple[str, bytes | None, bytes]]) -> None:
    """Send (topic, key, value) records and wait until every one is acknowledged. They go as record batches per
    partition, sparing producer.send's per-record future and pure-Python key hash, to the partition producer.send
    would pick (the Java client's murmur2 of the key)."""
    batches: dict[TopicPartition, Any] = {}
    deliveries: list[asyncio.Future] = []
    partitions: dict[str, list[int]] = {}
    for topic, key, value in records:
        if topic not in partitions:
            partitions[topic] = sorted(await producer.partitions_for(topic))
        tp = TopicPartition(topic, _partition(key, partitions[topic]))
        batch = batches.get(tp) or producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start the next
            deliveries.append(await producer.send_batch(batch, tp.topic, partition=tp.partition))
            batch = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)  # an empty batch takes any record
        batches[tp] = batch
    for tp, batch in batches.items():
        deliveries.append(await producer.send_batch(batch, tp.topic, partition=tp.partition))
    await asyncio.gather(*deliveries)


def _partition(key: bytes | None, partitions: list[int]) -> int:
    if key is None:
        return random.choice(partitions)
    return partitions[_key_hash(key) % len(partitions)]


@functools.lru_cache(maxsize=1 << 16)  # keys (sessions, owners) recur, and the hash is pure Python
def _key_hash(key: bytes) -> int:
    return murmur2(key) & 0x7FFFFFFF


def consumer(settings: Settings, *topics: str, group_id: str | None, **overrides: Any) -> AIOKafkaConsumer:
    """Offsets are committed by the caller, after its durable write (never auto-commit)."""
    options: dict[str, Any] = {
        "group_id": None if group_id is None else prefixed(settings, group_id),
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
    }
    options.update(overrides)
    names = [prefixed(settings, t) for t in topics]
    return AIOKafkaConsumer(*names, **client_kwargs(settings), **options)


async def ensure_topics(settings: Settings) -> list[str]:
    """Create missing topics with their partitions, replication, min.insync.replicas and retention; returns the
    names created. Existing topics whose partitions or replication differ from that are named in a warning."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        brokers = len((await admin.describe_cluster())["brokers"])
        replication = settings.replication_factor
        if replication is None:
            replication = default_replication(brokers)
        existing = set(await admin.list_topics())
        specs = {prefixed(settings, spec.name): spec for spec in all_specs(settings)}
        missing = [
            NewTopic(
                name=name,
                num_partitions=spec.partitions,
                replication_factor=replication,
                topic_configs={"retention.ms": str(spec.retention_ms),
                               "min.insync.replicas": str(min_insync(replication)),
                               **({"message.timestamp.type": "LogAppendTime"} if spec.log_append_time else {})},
            )
            for name, spec in specs.items()
            if name not in existing
        ]
        kept = [name for name in specs if name in existing]
        if kept:
            _warn_about_layout(await admin.describe_topics(kept), specs, replication)
        if missing:
            response = await admin.create_topics(missing)
            # The request succeeds as a whole even when single topics fail (a policy, an ACL, too few brokers for
            # the replication factor); a topic another process created meanwhile is the one error that is fine.
            failed = {name: for_code(code).__name__ for name, code, *_ in response.topic_errors
                      if code not in (0, TopicAlreadyExistsError.errno)}
            if failed:
                raise KafkaError(f"topics not created: {failed}")
            log.info("created topics: %s", ", ".join(t.name for t in missing))
        return [t.name for t in missing]
    finally:
        await admin.close()


def _warn_about_layout(described: list[dict[str, Any]], specs: dict[str, Any], replication: int) -> None:
    """Kafka never changes a topic's partitions or replicas by itself: say so when they are not what `up` would make
    (fewer replicas lose data with a broker; other partition counts change which consumer gets which key)."""
    for topic in described:
        if topic["error_code"] != 0 or not topic["partitions"]:
            continue
        partitions = len(topic["partitions"])
        replicas = min(len(p["replicas"]) for p in topic["partitions"])
        spec = specs[topic["topic"]]
        if partitions != spec.partitions or replicas < replication:
            log.warning("topic %s has %d partition(s) with %d replica(s); learnstream would create it with %d and %d "
                        "(kafka-topics.sh --alter / kafka-reassign-partitions.sh change that)",
                        topic["topic"], partitions, replicas, spec.partitions, replication)


async def topic_partitions(settings: Settings, topics: list[str]) -> list[TopicPartition]:
    """The partitions of existing topics (names without prefix); missing topics have none, and stay missing."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        # Described by name, a missing topic would be auto-created by a broker that allows it: a read must not.
        existing = set(await admin.list_topics())
        names = [name for name in (prefixed(settings, t) for t in topics) if name in existing]
        described = await admin.describe_topics(names) if names else []
    finally:
        await admin.close()
    return [TopicPartition(d["topic"], p["partition"]) for d in described if d["error_code"] == 0
            for p in sorted(d["partitions"], key=lambda p: p["partition"])]


async def describe_group(settings: Settings, group_id: str, *, timeout_s: float = 30.0) -> tuple[str, int]:
    """(state, member count) of a consumer group (name without prefix): ("Stable", 2), or ("Dead", 0) when it is
    empty or unknown. Retries while the group coordinator is not available (a fresh broker creates it on first use)."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    deadline = asyncio.get_running_loop().time() + timeout_s
    try:
        while True:
            try:
                [response] = await admin.describe_consumer_groups([prefixed(settings, group_id)])
                break
            except KafkaError as exc:
                if not exc.retriable or asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(COORDINATOR_RETRY_S)
    finally:
        await admin.close()
    _error, _group, state, _protocol_type, _protocol, members = response.groups[0][:6]
    return state, len(members)


async def read_batches_to_end(settings: Settings, topics: list[str]) -> AsyncIterator[list[ConsumerRecord]]:
    """Every record of the topics (names without prefix) from the beginning up to their end offsets at the
    start of the call, in batches of one partition's records in offset order. No consumer group: nothing is
    committed."""
    partitions = await topic_partitions(settings, topics)
    if not partitions:
        return
    reader = consumer(settings, group_id=None)
    await reader.start()
    try:
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        ends = await reader.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > await reader.position(tp)}
        while remaining:
            batch = await reader.getmany(*remaining, timeout_ms=1000, max_records=2000)
            for tp, records in batch.items():
                if records[-1].offset >= ends[tp]:
                    records = [record for record in records if record.offset < ends[tp]]
                if records:
                    yield records
            for tp in list(remaining):
                if await reader.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await reader.stop()


async def read_to_end(settings: Settings, topics: list[str]) -> AsyncIterator[ConsumerRecord]:
    """read_batches_to_end, record by record."""
    async for records in read_batches_to_end(settings, topics):
        for record in records:
            yield record
