"""Dead-letter entries: what could not be processed, why, and where it came from. Nothing is dropped silently.

An entry keeps the original bytes (as text when they are UTF-8, else base64; the first 4 KiB with length and sha256
when oversize), the source topic/partition/offset, a machine-readable reason and the time. A DLQ is as sensitive as
its source topic (a raw topic's DLQ holds raw PII) and needs the same retention and ACLs.

`redrive` sends entries back to their source topic with a header naming the first failure and the attempt (its
generation), then writes a redrive marker to the DLQ. A record that fails again gets an entry carrying that header,
so it counts as the same failure, and it is outstanding again; one that succeeds is not listed or redriven again.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from dataclasses import dataclass
from typing import AsyncIterator

import orjson
from aiokafka import ConsumerRecord

from learnstream import kafka
from learnstream.config import Settings
from learnstream.store import Batch
from learnstream.topics import prefixed
from schemas import InvalidEvent, decode_redrive_header, utc_now, validate_dlq_entry, validate_dlq_redriven

log = logging.getLogger(__name__)

KEEP_BYTES = 4096
REDRIVE_HEADER = "learnstream-redrive"


def entry(record: ConsumerRecord, error: InvalidEvent, *, source_topic: str) -> dict:
    """The DLQ record for a source record that failed with `error`. source_topic is without prefix."""
    raw: bytes = record.value or b""
    kept = raw[:KEEP_BYTES] if error.reason == "oversize" else raw
    try:
        payload = {"payload": kept.decode("utf-8")}
    except UnicodeDecodeError:
        payload = {"payload_b64": base64.b64encode(kept).decode()}
    redrive = _redrive_of(record)
    return {
        "schema": "dlq.v1",
        **error.as_dict(),
        "source": {"topic": source_topic, "partition": record.partition, "offset": record.offset},
        **({"redrive": redrive} if redrive else {}),
        "ts": utc_now(),
        "length": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "truncated": len(kept) < len(raw),
        **payload,
    }


def _redrive_of(record: ConsumerRecord) -> dict | None:
    for name, value in record.headers or ():
        if name == REDRIVE_HEADER:
            try:
                return decode_redrive_header(value or b"")
            except InvalidEvent as exc:  # anyone can set a header: the failure then counts as a new one
                log.warning("%s offset %d: ignoring a malformed %s header (%s)", record.topic, record.offset,
                            REDRIVE_HEADER, exc.reason)
    return None


def first_failure(dlq_entry: dict) -> tuple[int, int]:
    """The source partition and offset where the entry's event first failed (before any redrive)."""
    position = dlq_entry.get("redrive") or dlq_entry["source"]
    return position["partition"], position["offset"]


def index_row(dlq_topic: str, value: dict) -> tuple[str, int, int, str, str, str]:
    """The store's index row for a DLQ entry, keyed by the DLQ topic and the source partition and offset of the
    FIRST failure: an entry written twice (its source batch was redelivered after a crash), or again after a
    redrive, is one failure and counts once.
    Raises InvalidEvent for a malformed entry (anyone with write access to a DLQ topic can put anything there)."""
    validate_dlq_entry(value)
    partition, offset = first_failure(value)
    return dlq_topic, partition, offset, value["source"]["topic"], value["reason"], value["ts"]


def index(batch: Batch, dlq_topic: str, value: object) -> None:
    """Sort one record of a DLQ topic (an entry or a redrive marker) into the store's batch."""
    if isinstance(value, dict) and value.get("schema") == "dlq.redriven.v1":
        marker = validate_dlq_redriven(value)
        source = marker["source"]
        batch.dlq_redrives.append((dlq_topic, source["partition"], source["offset"], 0, marker["generation"]))
        return
    row = index_row(dlq_topic, value)
    batch.dlq.append(row)
    if "redrive" in value:
        batch.dlq_redrives.append((*row[:3], value["redrive"]["generation"], 0))


def original_bytes(dlq_entry: dict) -> bytes:
    if "payload_b64" in dlq_entry:
        return base64.b64decode(dlq_entry["payload_b64"])
    return dlq_entry["payload"].encode()


@dataclass
class Failure:
    """One source event's failures, as its DLQ says: the latest entry, the generation of the latest attempt that
    failed (0: the first failure) and of the latest redrive (0: never redriven)."""

    record: ConsumerRecord
    entry: dict
    failed: int = 0
    redriven: int = 0

    @property
    def outstanding(self) -> bool:
        return self.failed >= self.redriven


async def read(settings: Settings, topic: str, *, reason: str | None = None,
               include_redriven: bool = False) -> AsyncIterator[Failure]:
    """The failures a DLQ topic (name without prefix) records, once per source event, in order of first failure;
    only outstanding ones (never redriven, or failed again) unless include_redriven; optionally only those whose
    latest entry has a reason. An unreadable record (not written by learnstream) is logged by offset and skipped."""
    failures: dict[tuple[int, int], Failure] = {}
    redriven: dict[tuple[int, int], int] = {}
    async for record in kafka.read_to_end(settings, [topic]):
        try:
            value = orjson.loads(record.value or b"")
            if isinstance(value, dict) and value.get("schema") == "dlq.redriven.v1":
                source = validate_dlq_redriven(value)["source"]
                key = (source["partition"], source["offset"])
                redriven[key] = max(redriven.get(key, 0), value["generation"])
                continue
            key = first_failure(validate_dlq_entry(value))
            original_bytes(value)
        except (orjson.JSONDecodeError, InvalidEvent, KeyError, TypeError, ValueError) as exc:
            why = exc.reason if isinstance(exc, InvalidEvent) else type(exc).__name__  # a rule may quote the record
            log.warning("%s partition %d offset %d: not a DLQ entry (%s); skipped", topic, record.partition,
                        record.offset, why)
            continue
        generation = value["redrive"]["generation"] if "redrive" in value else 0
        known = failures.get(key)
        if known is None or generation >= known.failed:
            failures[key] = Failure(record, value, failed=generation)
    for key, failure in failures.items():
        failure.redriven = redriven.get(key, 0)
        if (include_redriven or failure.outstanding) and reason in (None, failure.entry.get("reason")):
            yield failure


async def redrive(settings: Settings, topic: str, *, reason: str | None = None) -> int:
    """Send outstanding entries' original bytes back to their source topic (after a fix), keyed as they were, then
    mark them redriven. Returns the count sent. What fails again gets a new entry (the same failure, outstanding
    again); what succeeds is stored once (event_id)."""
    source = topic.removesuffix(".dlq")
    producer = kafka.producer(settings)
    sent: list[tuple[Failure, int]] = []
    try:
        await producer.start()
        deliveries = []
        async for failure in read(settings, topic, reason=reason):
            if failure.entry.get("truncated"):
                log.warning("not redriving %s offset %d: only the first %d bytes were kept (oversize)", topic,
                            failure.record.offset, KEEP_BYTES)
                continue
            generation = max(failure.failed, failure.redriven) + 1
            partition, offset = first_failure(failure.entry)
            header = orjson.dumps({"partition": partition, "offset": offset, "generation": generation})
            deliveries.append(await producer.send(prefixed(settings, source), original_bytes(failure.entry),
                                                  key=failure.record.key, headers=[(REDRIVE_HEADER, header)]))
            sent.append((failure, generation))
        await asyncio.gather(*deliveries)  # every one acknowledged, or the error is raised and nothing is marked
        markers = []
        for failure, generation in sent:
            partition, offset = first_failure(failure.entry)
            marker = {"schema": "dlq.redriven.v1", "generation": generation, "ts": utc_now(),
                      "source": {"topic": source, "partition": partition, "offset": offset}}
            markers.append(await producer.send(prefixed(settings, topic), orjson.dumps(marker), key=failure.record.key))
        await asyncio.gather(*markers)
    finally:
        await producer.stop()
    return len(sent)
