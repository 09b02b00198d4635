"""Follows model.updated and hot-swaps the holders. Each replica reads every event (its own group).

The listener positions itself at the end of the topic *before* loading the served version from the registry, so
an event published in between is never missed; it also reconciles with the registry's served pointer now and
then, which covers a replica that was down when an event went by.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from aiokafka.errors import ConsumerStoppedError
from aiokafka import TopicPartition

from learnstream import kafka, topics
from learnstream.config import Settings
from learnstream.metrics import SWAPS
from learnstream.refusals import refuse
from learnstream.registry import RegistryError
from schemas import InvalidEvent, parse_internal
from serving.holders import ModelHolder

log = logging.getLogger(__name__)

RECONCILE_EVERY_S = 30.0


class ModelUpdates:
    def __init__(self, settings: Settings, holders: dict[str, ModelHolder]) -> None:
        self.settings = settings
        self.holders = holders
        self._consumer = kafka.consumer(settings, group_id=f"serving-{uuid.uuid4().hex[:12]}")
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        await self._consumer.start()
        partition = TopicPartition(topics.prefixed(self.settings, topics.MODEL_UPDATED), 0)
        self._consumer.assign([partition])
        await self._consumer.seek_to_end(partition)
        await self._consumer.position(partition)  # fixes the start point before the registry is read
        for holder in self.holders.values():
            await holder.load_served()

    async def stop(self) -> None:
        self._stopping.set()
        await self._consumer.stop()

    async def __aenter__(self) -> "ModelUpdates":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """Follow the topic until stop(). Serving supervises it (learnstream/supervisor.py): a replica that silently
        stopped following model.updated would answer from an old version forever."""
        loop = asyncio.get_running_loop()
        next_reconcile = loop.time() + RECONCILE_EVERY_S
        while not self._stopping.is_set():
            try:
                batch = await self._consumer.getmany(timeout_ms=500)
            except ConsumerStoppedError:
                return  # stop() was called while waiting for records
            for records in batch.values():
                for record in records:
                    await self.apply(record.value or b"", partition=record.partition, offset=record.offset)
            if loop.time() >= next_reconcile:
                next_reconcile = loop.time() + RECONCILE_EVERY_S
                for holder in self.holders.values():
                    await holder.load_served()

    async def apply(self, raw: bytes, *, partition: int = 0, offset: int = -1) -> bool:
        """Swap on a valid, promoted event naming a version inside this replica's registry; else keep serving.
        partition and offset: where the record was, for the line that says why it was refused."""
        try:
            event = parse_internal(topics.MODEL_UPDATED, raw)
        except InvalidEvent as error:
            SWAPS.labels(family="unknown", result="rejected").inc()
            refuse(topics.MODEL_UPDATED, partition, offset, error)
            return False
        try:
            holder = self.holders[event["family"]]
            path = holder.registry.resolve(event["family"], event["path"])
        except (KeyError, ValueError, OSError, RegistryError) as exc:  # ValueError: a NUL in the path
            SWAPS.labels(family="unknown", result="rejected").inc()
            log.error("model.updated partition %d offset %d refused: %s", partition, offset, exc)
            return False
        if event["decision"] != "promoted":
            log.info("%s: version %d was rejected by the promotion gate (%s)", event["family"], event["version"],
                     event.get("reason"))
            return False
        if int(path.name) != event["version"]:
            SWAPS.labels(family=event["family"], result="rejected").inc()
            log.error("model.updated refused: path and version disagree")
            return False
        return await holder.swap_to(event["version"], manifest_sha256=event["manifest_sha256"])
