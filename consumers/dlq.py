"""Dead-letter entries: what could not be processed, why, and where it came from. Nothing is dropped silently.

An entry keeps the original bytes (as text when they are UTF-8, else base64; the first 4 KiB with length and sha256
when oversize), the source topic/partition/offset, a machine-readable reason and the time. A DLQ is as sensitive as
its source topic (a raw topic's DLQ holds raw PII) and needs the same retention and ACLs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from typing import AsyncIterator

import orjson
from aiokafka import ConsumerRecord

from learnstream import kafka
from learnstream.config import Settings
from learnstream.topics import prefixed
from schemas import InvalidEvent, utc_now, validate_dlq_entry

log = logging.getLogger(__name__)

KEEP_BYTES = 4096


def entry(record: ConsumerRecord, error: InvalidEvent, *, source_topic: str) -> dict:
    """The DLQ record for a source record that failed with `error`. source_topic is without prefix."""
    raw: bytes = record.value or b""
    kept = raw[:KEEP_BYTES] if error.reason == "oversize" else raw
    try:
        payload = {"payload": kept.decode("utf-8")}
    except UnicodeDecodeError:
        payload = {"payload_b64": base64.b64encode(kept).decode()}
    return {
        "schema": "dlq.v1",
        **error.as_dict(),
        "source": {"topic": source_topic, "partition": record.partition, "offset": record.offset},
        "ts": utc_now(),
        "length": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "truncated": len(kept) < len(raw),
        **payload,
    }


def index_row(dlq_topic: str, value: dict) -> tuple[str, int, int, str, str, str]:
    """The store's index row for a DLQ entry, keyed by the DLQ topic and the SOURCE partition and offset: an entry
    written twice (its source batch was redelivered after a crash) is one failure and counts once.
    Raises InvalidEvent for a malformed entry (anyone with write access to a DLQ topic can put anything there)."""
    source = validate_dlq_entry(value)["source"]
    return dlq_topic, source["partition"], source["offset"], source["topic"], value["reason"], value["ts"]


def original_bytes(dlq_entry: dict) -> bytes:
    if "payload_b64" in dlq_entry:
        return base64.b64decode(dlq_entry["payload_b64"])
    return dlq_entry["payload"].encode()


async def read(settings: Settings, topic: str, *, reason: str | None = None) -> AsyncIterator[tuple[ConsumerRecord, dict]]:
    """The entries of a DLQ topic (name without prefix), once per source record, optionally only those with a
    reason. An unreadable entry (not written by learnstream) is logged by offset and skipped."""
    seen: set[tuple[int, int]] = set()
    async for record in kafka.read_to_end(settings, [topic]):
        try:
            value = validate_dlq_entry(orjson.loads(record.value or b""))
            source = (value["source"]["partition"], value["source"]["offset"])
            original_bytes(value)
        except (orjson.JSONDecodeError, InvalidEvent, KeyError, TypeError, ValueError) as exc:
            log.warning("%s partition %d offset %d: not a DLQ entry (%s); skipped", topic, record.partition,
                        record.offset, exc)
            continue
        if source in seen or (reason is not None and value.get("reason") != reason):
            continue
        seen.add(source)
        yield record, value


async def redrive(settings: Settings, topic: str, *, reason: str | None = None) -> int:
    """Send matching entries' original bytes back to their source topic (after a fix), keyed as they were.
    Returns the count sent. What fails again gets a new DLQ entry; what succeeds is stored once (event_id)."""
    source = topic.removesuffix(".dlq")
    producer = kafka.producer(settings)
    deliveries = []
    try:
        await producer.start()
        async for record, value in read(settings, topic, reason=reason):
            if value.get("truncated"):
                log.warning("not redriving %s offset %d: only the first %d bytes were kept (oversize)", topic,
                            record.offset, KEEP_BYTES)
                continue
            deliveries.append(await producer.send(prefixed(settings, source), original_bytes(value), key=record.key))
        await asyncio.gather(*deliveries)  # every one acknowledged, or the error is raised
    finally:
        await producer.stop()
    return len(deliveries)
