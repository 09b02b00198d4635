"""The anonymizer role: chat.raw / image.raw / erasure.requests -> *.anon (or the source topic's DLQ).

Outputs are sent with an idempotent acks=all producer and awaited before the batch's offsets are committed; the
next batch is anonymized meanwhile (see consumers/stage.py).
An event that makes the text engine itself fail goes to the DLQ (reason "anonymizer_error") on its own, so one
hostile text can neither stall its partition nor take the rest of its batch down with it. A failure of the disk
(the key store busy, locked, full or read-only) is no fault of the events: their batch waits and is retried, never
dead-lettered (learnstream/transient.py).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import Counter

import orjson
from aiokafka import ConsumerRecord

from consumers import dlq
from consumers.privacy import Anonymizer, Outcome
from consumers.stage import ConsumerStage
from learnstream import kafka, topics
from learnstream.config import FAMILIES, Settings
from learnstream.embedding_dim import EmbeddingDim
from learnstream.keystore import KeyStore
from learnstream.metrics import DLQ, ERASURES, PRODUCED, SKIPPED_ERASED, SKIPPED_NO_CONSENT
from learnstream.transient import is_transient
from schemas import InvalidEvent

log = logging.getLogger(__name__)

Output = tuple[str, dict, bytes | None]  # (topic without prefix, record, key)

_KIND_BY_TOPIC = {topics.raw("chat"): "chat", topics.raw("image"): "image", topics.ERASURE_REQUESTS: "erasure"}


class AnonymizerService(ConsumerStage):
    source_topics = tuple(_KIND_BY_TOPIC)
    group_id = "anonymizer"

    def __init__(self, settings: Settings, *, anonymizer: Anonymizer | None = None) -> None:
        super().__init__(settings)
        self.anonymizer = anonymizer or Anonymizer(
            key=settings.key_bytes(),
            ner_model=settings.ner_model,
            max_event_bytes=settings.max_event_bytes,
            embedding_dim=EmbeddingDim(configured=settings.embedding_dim, path=settings.embedding_dim_path),
            keys=KeyStore(settings.keys_path, cache_size=settings.key_cache_size),
        )
        self._producer = kafka.producer(settings)
        self._prefix = settings.topic_prefix

    async def start(self) -> None:
        if not self.anonymizer.names_enabled:
            log.warning("anonymizer: NO NER MODEL LOADED: names, places and organisations are NOT being removed")
        await self._producer.start()
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        await self._producer.stop()

    async def prepare(self, records: list[ConsumerRecord]) -> list[Output]:
        by_kind: dict[str, list[ConsumerRecord]] = {}
        for record in records:
            by_kind.setdefault(_KIND_BY_TOPIC[record.topic.removeprefix(self._prefix)], []).append(record)
        outputs: list[Output] = []
        # Erasures first: an erased owner's events in the same batch are then skipped, not sealed and sent.
        for kind, group in sorted(by_kind.items(), key=lambda item: item[0] != "erasure"):
            outcomes = await self._anonymize(kind, [r.value or b"" for r in group], [_appended_ms(r) for r in group])
            outputs += [out for record, outcome in zip(group, outcomes) for out in self._route(kind, record, outcome)]
        return outputs

    async def persist(self, outputs: list[Output]) -> None:
        await kafka.send_all(self._producer, [(f"{self._prefix}{topic}", key, orjson.dumps(value))
                                              for topic, value, key in outputs])
        for topic, count in Counter(topic for topic, _, _ in outputs).items():
            PRODUCED.labels(topic=topic).inc(count)

    async def _anonymize(self, kind: str, raws: list[bytes], appended_ms: list[int | None]) -> list[Outcome]:
        """One outcome per raw event. If the batch makes the engine fail, each event is retried alone and only the
        ones that still fail become DLQ outcomes (the exception's type is kept, never its message: it may quote
        the text). A failure of the key store is the disk's, never the events': it is raised, and the stage
        retries the batch (transient) or its supervisor restarts the stage."""
        try:
            # NER is CPU-bound: off the event loop so heartbeats and other roles keep running.
            return await asyncio.to_thread(self.anonymizer.process, kind, raws, appended_ms)
        except Exception as exc:
            if is_transient(exc) or isinstance(exc, sqlite3.Error):
                raise
            if len(raws) == 1:
                return [Outcome("invalid", error=InvalidEvent("anonymizer_error", None, type(exc).__name__))]
        log.warning("anonymizer: a %s batch of %d failed; retrying its events one by one", kind, len(raws))
        return [outcome for raw, at_ms in zip(raws, appended_ms)
                for outcome in await self._anonymize(kind, [raw], [at_ms])]

    def _route(self, kind: str, record: ConsumerRecord, outcome: Outcome) -> list[Output]:
        if outcome.kind == "invalid":
            source = record.topic.removeprefix(self._prefix)
            DLQ.labels(topic=source, reason=outcome.error.reason).inc()
            # The reason and field only: a rule may quote the event (an unknown schema name, say).
            log.info("%s offset %d -> DLQ: %s at %s", source, record.offset, outcome.error.reason, outcome.error.field)
            return [(topics.dlq(source), dlq.entry(record, outcome.error, source_topic=source), record.key)]
        if outcome.kind == "erasure":
            ERASURES.labels(stage="anonymizer").inc()
            owner = outcome.record["owner"]
            # The ledger entry goes to every family's dataset of record, so the store and replay of each honour it.
            return [(topics.anon(f), outcome.record, owner.encode()) for f in FAMILIES]
        if outcome.kind == "skip":
            skipped = SKIPPED_ERASED if outcome.record["reason"] == "erased" else SKIPPED_NO_CONSENT
            skipped.labels(family=kind).inc()
        sample = outcome.record
        key = sample.get("session") or sample.get("image_id") or sample["event_id"]
        return [(topics.anon(kind), sample, key.encode())]


def _appended_ms(record: ConsumerRecord) -> int | None:
    """The record's timestamp: the broker's append time on the raw topics `up` creates (LogAppendTime); on a topic
    made otherwise, the producer's send time, still not the app's `ts`. None when the record has none."""
    return record.timestamp if record.timestamp is not None and record.timestamp >= 0 else None
