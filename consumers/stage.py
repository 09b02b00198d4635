"""The consume loop every pipeline stage shares: fetch a batch, make it durable, then commit its offsets.

A stage subclasses ConsumerStage and implements `handle(records)`. Offsets are committed only after `handle`
returns, i.e. after the stage's output is acknowledged by Kafka or committed to SQLite; a crash in between
redelivers the batch, and every output is idempotent on event_id, so nothing is lost and nothing doubles.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Sequence

from aiokafka import ConsumerRecord
from aiokafka.errors import ConsumerStoppedError, KafkaError

from learnstream import kafka
from learnstream.config import Settings
from learnstream.metrics import CONSUMED, LAG_RECORDS

log = logging.getLogger(__name__)


class ConsumerStage:
    """start()/stop(), or `async with`; `run()` consumes until stop() is called."""

    #: Topics (without prefix) and the consumer group; several processes in one group share the partitions.
    source_topics: Sequence[str] = ()
    group_id: str = ""
    #: Records fetched per batch: larger batches amortize the SQLite commit and the NER batch.
    max_records: int = 500

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer = kafka.consumer(
            settings, *self.source_topics, group_id=self.group_id, max_poll_records=self.max_records
        )
        self._stopping = asyncio.Event()
        self._started = False

    async def start(self) -> None:
        await self._consumer.start()
        self._started = True

    async def stop(self) -> None:
        self._stopping.set()
        if self._started:
            self._started = False
            await self._consumer.stop()

    async def __aenter__(self) -> "ConsumerStage":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def handle(self, records: list[ConsumerRecord]) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                batch = await self._consumer.getmany(timeout_ms=200, max_records=self.max_records)
            except ConsumerStoppedError:
                return  # stop() was called while waiting for records
            if not batch:
                continue
            records = [r for part in batch.values() for r in part]
            await self.handle(records)
            offsets = {tp: recs[-1].offset + 1 for tp, recs in batch.items()}
            try:
                await self._consumer.commit(offsets)
            except KafkaError as exc:
                # A rebalance took the partitions away: the new owner redelivers, and outputs are idempotent.
                log.warning("%s: offset commit failed (%s); the batch will be redelivered", self.group_id, exc)
            for tp, recs in batch.items():
                CONSUMED.labels(topic=tp.topic, group=self.group_id).inc(len(recs))
                end = self._consumer.highwater(tp)
                if end is not None:
                    LAG_RECORDS.labels(topic=tp.topic, partition=str(tp.partition), group=self.group_id).set(
                        max(end - offsets[tp], 0)
                    )
