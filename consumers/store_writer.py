"""The store writer role: *.anon (and every DLQ, indexed for the status) -> SQLite, then samples.stored.

Offsets are committed only after the SQLite commit; writes are idempotent on event_id, so a redelivered batch
stores nothing twice. After each commit the new watermark is announced on samples.stored, so the trainer never
trains on anything that is not durable. Samples are stored as they arrive, content still sealed (see
learnstream/store.py): decoding a batch is a JSON parse per record, and SQLite's work runs in its own thread while
the next batch is decoded (consumers/stage.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import orjson
from aiokafka import ConsumerRecord

from consumers import dlq
from consumers.stage import ConsumerStage
from learnstream import kafka, topics
from learnstream.config import FAMILIES, Settings
from learnstream.metrics import DLQ, PRODUCED, SAMPLES_WRITTEN
from learnstream.refusals import refuse
from learnstream.store import GROUP_FIELDS, Batch, Store, sample_row
from schemas import InvalidEvent, is_utc_timestamp, utc_now, validate

log = logging.getLogger(__name__)

_SAMPLE_SCHEMAS = {"chat.sample.v1", "image.sample.v1"}
DLQ_TOPICS = tuple(topics.dlq(t) for f in FAMILIES for t in (topics.raw(f), topics.anon(f))) + (
    topics.dlq(topics.ERASURE_REQUESTS),
)


def sort_record(batch: Batch, topic: str, body: bytes | None) -> None:
    """Sort one record of an *.anon topic or a DLQ (`topic` without prefix) into the batch; shared with replay.
    Raises InvalidEvent for anything that is neither."""
    try:
        value = orjson.loads(body or b"")
        if topic.endswith(".dlq"):
            dlq.index(batch, topic, value)
        else:
            _add_anon_record(batch, value, body)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("invalid_record", None, type(exc).__name__) from None


def _add_anon_record(batch: Batch, value: dict, body: bytes) -> None:
    schema = value.get("schema") if isinstance(value, dict) else None
    if not isinstance(schema, str):
        raise InvalidEvent("unknown_schema", "schema", "not an anonymized record")
    if schema in _SAMPLE_SCHEMAS:
        for name in ("event_id", "ts", "owner", GROUP_FIELDS[schema.split(".", 1)[0]]):
            if not isinstance(value.get(name), str):
                raise InvalidEvent("missing_field", name, "required in an anonymized sample")
        for name in ("ts", "appended_at"):  # the instants erasure compares
            if name in value and not is_utc_timestamp(value[name]):
                raise InvalidEvent("invalid_value", name, "not an ISO-8601 UTC timestamp")
        if "sealed" in value and not (isinstance(value["sealed"], str) and isinstance(value.get("kid"), str)):
            raise InvalidEvent("unsealable", "sealed", "not a valid sealed sample")
        batch.samples.append(sample_row(value, body))
    elif schema == "skip.v1":
        validate(value, expected=("skip.v1",))
        batch.skipped.append((value["event_id"], value["family"], value["reason"]))
    elif schema == "erasure.ledger.v1":
        validate(value, expected=("erasure.ledger.v1",))
        batch.erasures.append((value["owner"], value.get("erased_at") or value["ts"]))
    else:
        raise InvalidEvent("unknown_schema", "schema", "not an anonymized record")


@dataclass
class _Decoded:
    batch: Batch = field(default_factory=Batch)
    bad: list[tuple[ConsumerRecord, InvalidEvent]] = field(default_factory=list)


class StoreWriterService(ConsumerStage):
    source_topics = tuple(topics.anon(f) for f in FAMILIES) + DLQ_TOPICS
    group_id = "store-writer"
    # Each batch pays an fsync'd commit, two round trips (samples.stored, the offsets), and a write of every page of
    # the event_id index it touched; those pages are random, so a batch of n samples dirties about n of them until
    # the batch is large enough to share them. So: up to 10,000 records when there is a backlog, and otherwise a
    # fetch waits up to 250 ms for 1 MiB (some 2,500 samples) rather than taking its first records. Beside the
    # anonymizer on one core, fuller batches cost the writer less CPU per sample and wake the process (and so
    # interrupt NER) less often, at the price of up to a quarter of a second before a sample counts as stored, which
    # no training threshold notices. A longer wait saved that process no more CPU, and the end of every burst waits
    # it out in full.
    max_records = 10_000
    fetch_min_bytes = 1024 * 1024
    fetch_max_wait_ms = 250

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.store = Store(settings.store_path)
        # No linger: it sends one watermark per batch, and the batch's commit waits for it.
        self._producer = kafka.producer(settings, linger_ms=0)
        self._prefix = settings.topic_prefix

    async def start(self) -> None:
        await self.store.start()
        await self._producer.start()
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        await self._producer.stop()
        await self.store.stop()

    async def prepare(self, records: list[ConsumerRecord]) -> _Decoded:
        decoded = _Decoded()
        for record in records:
            try:
                sort_record(decoded.batch, record.topic.removeprefix(self._prefix), record.value)
            except InvalidEvent as error:
                decoded.bad.append((record, error))
        return decoded

    async def persist(self, decoded: _Decoded) -> None:
        batch = decoded.batch
        for record, error in decoded.bad:
            await self._dead_letter(record, error, batch)
        erased = await self.store.write(batch)
        added = Counter(row[1] for row in batch.samples)
        for family, count in added.items():
            SAMPLES_WRITTEN.labels(family=family).inc(count)
        for family in FAMILIES if batch.erasures else added:
            await self._announce(family, added[family], erased.get(family))

    async def _dead_letter(self, record: ConsumerRecord, error: InvalidEvent, batch: Batch) -> None:
        source = record.topic.removeprefix(self._prefix)
        if source.endswith(".dlq"):
            # A malformed DLQ entry cannot go to a DLQ of a DLQ forever: count and log it (no payload), move on.
            refuse(source, record.partition, record.offset, error)
            return
        DLQ.labels(topic=source, reason=error.reason).inc()
        # The reason and field only: a rule may quote the record.
        log.info("%s partition %d offset %d -> DLQ: %s at %s", source, record.partition, record.offset,
                 error.reason, error.field)
        entry = dlq.entry(record, error, source_topic=source)
        await self._producer.send_and_wait(f"{self._prefix}{topics.dlq(source)}", orjson.dumps(entry), key=record.key)
        dlq.index(batch, topics.dlq(source), entry)

    async def _announce(self, family: str, added: int, erased: tuple[int, int] | None) -> None:
        # What this batch added, not a total: counting the whole store per batch would slow as the store grows.
        event = {
            "schema": "samples.stored.v1",
            "family": family,
            "watermark": await self.store.watermark(family),
            "added": added,
            "ts": utc_now(),
        }
        if erased is not None:
            # What an erasure removed, and the lowest id: a model trained up to that id or beyond may carry it.
            event["erased"], event["erased_from"] = erased
        await self._producer.send_and_wait(f"{self._prefix}{topics.SAMPLES_STORED}", orjson.dumps(event),
                                           key=family.encode())
        PRODUCED.labels(topic=topics.SAMPLES_STORED).inc()
