"""The consume loop every pipeline stage shares: fetch a batch, prepare it, make it durable, commit its offsets.

A stage subclasses ConsumerStage and implements two phases. `prepare(records)` does the batch's CPU work (decode,
anonymize) and nothing durable, so it can be dropped and redone. `persist(prepared)` makes the result durable
(acknowledged by Kafka, committed to SQLite) and is idempotent on event_id. Offsets are committed only after
`persist` returns, so a crash in between redelivers the batch and nothing is lost or doubled.

The phases overlap: while batch N is persisted (waiting on the broker's acks, or on SQLite in its own thread) and
batch N-1's offsets are committed, batch N+1 is fetched and prepared. Persists never overlap each other, so outputs
keep their order, and offsets are committed batch by batch in order.

The loop outlives the broker: while Kafka or the disk is unavailable (learnstream/transient.py says which failures
pass), every batch not yet committed is rewound to its first offsets and retried with a growing pause, instead of
ending the role (and without ever skipping past it). An episode is logged once when it starts and once when it
ends, and every retry is counted (learnstream_transient_retries_total). A Kafka error no retry mends (authorization,
a record too large) stops the loop with StageStopped and one clear message. Any other exception is a bug: it ends
the loop with nothing more committed; its supervisor (learnstream/supervisor.py) calls run() again, which goes on
from the committed offsets, so the batch is redelivered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Sequence

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError

from learnstream import kafka
from learnstream.config import Settings
from learnstream.metrics import (COMMITTED_OFFSET, CONSUMED, END_OFFSET, LAG_RECORDS, LAG_SECONDS,
                                 TRANSIENT_RETRIES)
from learnstream.transient import cause, is_fatal, is_transient, stopped

log = logging.getLogger(__name__)

FIRST_PAUSE_S = 0.5
FETCH_WAIT_MS = 200  # how long a fetch waits for records; also how often the loop sees stop()
MAX_PAUSE_S = 10.0
# How long stop() lets the loop finish the batch it is persisting; after that a restart redelivers it.
STOP_GRACE_S = 30.0

Batch = dict[TopicPartition, list[ConsumerRecord]]


@dataclass
class _Persisting:
    batch: Batch
    task: asyncio.Task


class ConsumerStage:
    """start()/stop(), or `async with`; `run()` consumes until stop() is called."""

    #: Topics (without prefix) and the consumer group; several processes in one group share the partitions.
    source_topics: Sequence[str] = ()
    group_id: str = ""
    #: Records fetched per batch: larger batches amortize the SQLite commit and the NER batch.
    max_records: int = 500
    #: A fetch returns once this many bytes are ready, or after fetch_max_wait_ms: a stage whose every batch has a
    #: fixed cost waits a little for fuller batches (Kafka's fetch.min.bytes and fetch.max.wait.ms).
    fetch_min_bytes: int = 1
    fetch_max_wait_ms: int = 500

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer = kafka.consumer(
            settings, *self.source_topics, group_id=self.group_id, max_poll_records=self.max_records,
            fetch_min_bytes=self.fetch_min_bytes, fetch_max_wait_ms=self.fetch_max_wait_ms,
        )
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()  # run() has returned (or never ran)
        self._stopped.set()
        self._started = False
        self._pause_s = FIRST_PAUSE_S
        self._failing_since: float | None = None  # when the current episode of transient failures began
        self._failing_on: str | None = None  # what it waits on: "sqlite: OperationalError", say
        self._fetch_failed = False

    async def start(self) -> None:
        await self._consumer.start()
        self._started = True

    async def stop(self) -> None:
        self._stopping.set()
        try:  # let the loop finish persisting and committing its last batch
            await asyncio.wait_for(self._stopped.wait(), STOP_GRACE_S)
        except asyncio.TimeoutError:
            log.warning("%s: stopping with a batch still being persisted; it will be redelivered", self.group_id)
        if self._started:
            self._started = False
            await self._consumer.stop()

    async def __aenter__(self) -> "ConsumerStage":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def prepare(self, records: list[ConsumerRecord]) -> Any:
        """The batch's CPU work, with no durable effect (it may be dropped and redone)."""
        raise NotImplementedError

    async def persist(self, prepared: Any) -> None:
        """Make a prepared batch durable; idempotent on event_id."""
        raise NotImplementedError

    async def run(self) -> None:
        self._stopped.clear()
        persisting: _Persisting | None = None  # the previous batch, being made durable
        try:
            await self._rewind_to_committed()
            while not self._stopping.is_set():
                # Waiting for the next batch while the last one persists keeps the two overlapped; at the end of
                # the stream it delays only that batch's offset commit (its output is already durable).
                batch = await self._fetch()
                if batch is None:
                    return
                try:
                    prepared = await self.prepare([r for part in batch.values() for r in part]) if batch else None
                    if persisting is not None:
                        await persisting.task
                except Exception as exc:
                    if is_fatal(exc):
                        raise stopped(self.group_id, exc) from None
                    if not is_transient(exc):
                        raise
                    uncommitted = [batch]
                    if persisting is not None:  # done or not, it is redone after the rewind: let it end first
                        await asyncio.gather(persisting.task, return_exceptions=True)
                        uncommitted, persisting = [persisting.batch, batch], None
                    self._rewind(uncommitted)
                    await self._pause(exc, f"a batch of {sum(len(r) for b in uncommitted for r in b.values())} "
                                           "records is not committed and waits")
                    continue
                durable = persisting.batch if persisting is not None else {}
                # This batch's persist and the durable one's offset commit both run in the background, so the next
                # batch is fetched and prepared meanwhile rather than after the commit's round trip.
                persisting = (_Persisting(batch, asyncio.create_task(self._make_durable(prepared, durable)))
                              if batch or durable else None)
        finally:
            if persisting is not None:  # stopping: finish the write; its offsets are left to the redelivery
                await asyncio.gather(persisting.task, return_exceptions=True)
            self._stopped.set()

    async def _make_durable(self, prepared: Any, durable: Batch) -> None:
        """Persist a prepared batch (None: the fetch brought nothing) while the offsets of the previous one, durable
        now, are committed. Commits stay in batch order: the loop starts the next of these only after this one has
        ended."""
        committing = asyncio.create_task(self._commit(durable)) if durable else None
        try:
            if prepared is not None:
                await self.persist(prepared)
        finally:
            if committing is not None:
                self._observe(durable, committed=await committing)
        self._recovered()

    async def _fetch(self) -> Batch | None:
        """The next batch ({} when none came, or after a failure and its pause); None once stopped."""
        try:
            batch = await self._consumer.getmany(timeout_ms=FETCH_WAIT_MS, max_records=self.max_records)
        except ConsumerStoppedError:
            return None
        except KafkaError as exc:
            if not is_transient(exc):
                raise stopped(self.group_id, exc) from None
            self._fetch_failed = True
            await self._pause(exc, "fetching")
            return {}
        if self._fetch_failed:  # an idle stage has no batch to persist to say so
            self._fetch_failed = False
            self._recovered()
        return batch

    async def _rewind_to_committed(self) -> None:
        """A run() restarted by its supervisor after an error goes on from the committed offsets, not from where
        the failed run had fetched to (a first run owns no partitions yet: the group starts them there)."""
        for tp in self._consumer.assignment():
            offset = await self._consumer.committed(tp)
            if offset is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, offset)

    def _rewind(self, batches: list[Batch]) -> None:
        """Fetch the uncommitted batches again from their first offsets. A partition taken away by a rebalance
        meanwhile is redelivered to its new owner from the last committed offset, which they never passed."""
        owned = self._consumer.assignment()
        first: dict[TopicPartition, int] = {}
        for batch in reversed(batches):  # the earlier batch's offsets win
            first.update({tp: records[0].offset for tp, records in batch.items()})
        for tp, offset in first.items():
            if tp in owned:
                self._consumer.seek(tp, offset)

    async def _pause(self, exc: BaseException, what: str) -> None:
        """Wait before a retry: twice as long each time, up to MAX_PAUSE_S. Logged when an episode starts (the
        exception's type only: a message may quote a record) and counted every time."""
        TRANSIENT_RETRIES.labels(group=self.group_id, cause=cause(exc)).inc()
        self._failing_on = f"{cause(exc)}: {type(exc).__name__}"
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning("%s: %s failed (%s); retrying with a pause of up to %.0fs until it passes (logged again "
                        "when it does)", self.group_id, what, type(exc).__name__, MAX_PAUSE_S)
        try:
            await asyncio.wait_for(self._stopping.wait(), self._pause_s)
        except asyncio.TimeoutError:
            pass
        self._pause_s = min(self._pause_s * 2, MAX_PAUSE_S)

    def _recovered(self) -> None:
        self._pause_s = FIRST_PAUSE_S
        if self._failing_since is not None:
            log.warning("%s: recovered after %.1fs of transient failures", self.group_id,
                        time.monotonic() - self._failing_since)
            self._failing_since = self._failing_on = None

    def waiting_on(self) -> str | None:
        """What the loop waits on while a transient failure lasts (for health checks); None when it does not."""
        return self._failing_on

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
