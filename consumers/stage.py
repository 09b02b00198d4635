"""The consume loop every pipeline stage shares: fetch a batch, make it durable, then commit its offsets.

A stage subclasses ConsumerStage and implements `handle(records)`. Offsets are committed only after `handle`
returns, i.e. after the stage's output is acknowledged by Kafka or committed to SQLite; a crash in between
redelivers the batch, and every output is idempotent on event_id, so nothing is lost and nothing doubles.

The loop outlives the broker: while Kafka or the disk is unavailable, a failed batch is rewound to its first
offsets and retried with a growing pause, instead of ending the role (and without ever skipping past it).
Any other exception is a bug: it ends the loop with nothing committed, so a restart redelivers the batch.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from typing import Sequence

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError

from learnstream import kafka
from learnstream.config import Settings
from learnstream.metrics import COMMITTED_OFFSET, CONSUMED, END_OFFSET, LAG_RECORDS, LAG_SECONDS

log = logging.getLogger(__name__)

# Failures of the broker, the network or the disk: they pass, so the batch is retried rather than the role ended.
TRANSIENT_ERRORS = (KafkaError, OSError, sqlite3.OperationalError)
FIRST_PAUSE_S = 0.5
MAX_PAUSE_S = 10.0

Batch = dict[TopicPartition, list[ConsumerRecord]]


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
        self._pause_s = FIRST_PAUSE_S

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
            except KafkaError as exc:
                await self._pause(f"fetch failed ({type(exc).__name__})")
                continue
            if not batch:
                continue
            try:
                await self.handle([r for part in batch.values() for r in part])
            except TRANSIENT_ERRORS as exc:
                self._rewind(batch)
                await self._pause(f"a batch of {sum(map(len, batch.values()))} records failed "
                                  f"({type(exc).__name__}); it will be retried")
                continue
            self._pause_s = FIRST_PAUSE_S
            self._observe(batch, committed=await self._commit(batch))

    def _rewind(self, batch: Batch) -> None:
        """Fetch the batch again from its first offsets. A partition taken away by a rebalance meanwhile is
        redelivered to its new owner from the last committed offset, which this batch never passed."""
        owned = self._consumer.assignment()
        for tp, records in batch.items():
            if tp in owned:
                self._consumer.seek(tp, records[0].offset)

    async def _pause(self, why: str) -> None:
        log.warning("%s: %s; pausing %.1fs", self.group_id, why, self._pause_s)
        try:
            await asyncio.wait_for(self._stopping.wait(), self._pause_s)
        except asyncio.TimeoutError:
            pass
        self._pause_s = min(self._pause_s * 2, MAX_PAUSE_S)

    async def _commit(self, batch: Batch) -> bool:
        owned = self._consumer.assignment()
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if tp in owned}
        if not offsets:
            return False
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            # A rebalance took the partitions away, or the broker is down: the batch is durable, so the worst case
            # is a redelivery, which every output absorbs (idempotent on event_id).
            log.warning("%s: offset commit failed (%s); the batch may be redelivered", self.group_id,
                        type(exc).__name__)
            return False
        return True

    def _observe(self, batch: Batch, *, committed: bool) -> None:
        now = time.time()
        for tp, records in batch.items():
            labels = {"topic": tp.topic, "partition": str(tp.partition), "group": self.group_id}
            CONSUMED.labels(topic=tp.topic, group=self.group_id).inc(len(records))
            next_offset = records[-1].offset + 1
            if committed:
                COMMITTED_OFFSET.labels(**labels).set(next_offset)
            end = self._consumer.highwater(tp)
            if end is None:
                continue
            behind = max(end - next_offset, 0)
            END_OFFSET.labels(**labels).set(end)
            LAG_RECORDS.labels(**labels).set(behind)
            LAG_SECONDS.labels(**labels).set(max(now - records[-1].timestamp / 1000, 0) if behind else 0)
