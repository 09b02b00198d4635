"""Kafka clients built from Settings: the same bootstrap, security and topic prefix everywhere."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any, AsyncIterator

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from learnstream.config import ConfigError, Settings
from learnstream.topics import all_specs, prefixed

log = logging.getLogger(__name__)


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
        kwargs["sasl_plain_password"] = settings.sasl_password
    return kwargs


def producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """Idempotent, acks=all: a retried send is written once, and only acknowledged when fully replicated."""
    options: dict[str, Any] = {"acks": "all", "enable_idempotence": True, "linger_ms": 5}
    options.update(overrides)
    return AIOKafkaProducer(**client_kwargs(settings), **options)


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
    """Create missing topics with their partitions and retention; returns the names created."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=prefixed(settings, spec.name),
                num_partitions=spec.partitions,
                replication_factor=settings.replication_factor,
                topic_configs={"retention.ms": str(spec.retention_ms)},
            )
            for spec in all_specs(settings)
            if prefixed(settings, spec.name) not in existing
        ]
        if missing:
            await admin.create_topics(missing)
            log.info("created topics: %s", ", ".join(t.name for t in missing))
        return [t.name for t in missing]
    finally:
        await admin.close()


async def topic_partitions(settings: Settings, topics: list[str]) -> list[TopicPartition]:
    """The partitions of existing topics (names without prefix); missing topics have none."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([prefixed(settings, t) for t in topics])
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
                await asyncio.sleep(0.5)
    finally:
        await admin.close()
    _error, _group, state, _protocol_type, _protocol, members = response.groups[0][:6]
    return state, len(members)


async def read_to_end(settings: Settings, topics: list[str]) -> AsyncIterator[ConsumerRecord]:
    """Every record of the topics (names without prefix) from the beginning up to their end offsets at the
    start of the call, partition by partition in offset order. No consumer group: nothing is committed."""
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
                for record in records:
                    if record.offset < ends[tp]:
                        yield record
            for tp in list(remaining):
                if await reader.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await reader.stop()
