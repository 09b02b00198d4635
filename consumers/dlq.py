"""Dead-letter entries: what could not be processed, why, and where it came from. Nothing is dropped silently.

An entry keeps the original bytes (as text when they are UTF-8, else base64; the first 4 KiB with length and sha256
when oversize), the source topic/partition/offset, a machine-readable reason and the time. A DLQ is as sensitive as
its source topic (a raw topic's DLQ holds raw PII) and needs the same retention and ACLs.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import AsyncIterator

import orjson
from aiokafka import ConsumerRecord

from learnstream import kafka
from learnstream.config import Settings
from learnstream.topics import prefixed
from schemas import InvalidEvent, utc_now

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


def original_bytes(dlq_entry: dict) -> bytes:
    if "payload_b64" in dlq_entry:
        return base64.b64decode(dlq_entry["payload_b64"])
    return dlq_entry["payload"].encode()


async def read(settings: Settings, topic: str, *, reason: str | None = None) -> AsyncIterator[tuple[ConsumerRecord, dict]]:
    """Every entry of a DLQ topic (name without prefix), optionally only those with a reason."""
    async for record in kafka.read_to_end(settings, [topic]):
        value = orjson.loads(record.value)
        if reason is None or value.get("reason") == reason:
            yield record, value


async def redrive(settings: Settings, topic: str, *, reason: str | None = None) -> int:
    """Send matching entries' original bytes back to their source topic (after a fix). Returns the count."""
    producer = kafka.producer(settings)
    await producer.start()
    sent = 0
    try:
        async for record, value in read(settings, topic, reason=reason):
            source = value["source"]["topic"]
            if value.get("truncated"):
                log.warning("not redriving %s offset %s: the payload was truncated (oversize)", topic, record.offset)
                continue
            await producer.send_and_wait(prefixed(settings, source), original_bytes(value), key=record.key)
            sent += 1
    finally:
        await producer.stop()
    return sent
