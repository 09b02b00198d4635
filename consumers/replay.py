"""`learnstream replay`: rebuild the store from the *.anon topics (the dataset of record) and swap it in.

The new store is built beside the live one, from the beginning of every *.anon topic (and the DLQ index), through
the same sorting and the same idempotent, erasure-honouring writes as the store writer. Then it replaces the live
file atomically (os.replace). Stop the store role first: a running store writer keeps writing the old file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import orjson

from consumers.store_writer import DLQ_TOPICS, add_anon_record
from learnstream import kafka, topics
from learnstream.config import FAMILIES, Settings
from learnstream.store import Batch, Store
from schemas import InvalidEvent

BATCH = 2000

Progress = Callable[[int, float], None]  # (records read, records per second)


async def rebuild(settings: Settings, target: Path, *, progress: Progress | None = None) -> tuple[int, str]:
    """Build a store at `target` from the topics; returns (records read, content hash)."""
    prefix = settings.topic_prefix
    started, count, batch = time.monotonic(), 0, Batch()
    async with Store(target) as store:
        names = [topics.anon(f) for f in FAMILIES] + list(DLQ_TOPICS)
        async for record in kafka.read_to_end(settings, names):
            topic = record.topic.removeprefix(prefix)
            try:
                value = orjson.loads(record.value or b"")
                if topic.endswith(".dlq"):
                    batch.dlq.append((topic, record.partition, record.offset, value["source"]["topic"],
                                      value["reason"], value["ts"]))
                else:
                    add_anon_record(batch, value)
            except (orjson.JSONDecodeError, KeyError, TypeError, InvalidEvent):
                pass  # the live store writer sent it to the DLQ, which this replay indexes too
            count += 1
            if count % BATCH == 0:
                await store.write(batch)
                batch = Batch()
                if progress:
                    progress(count, count / max(time.monotonic() - started, 1e-9))
        await store.write(batch)
        digest = await store.content_hash()
    if progress:
        progress(count, count / max(time.monotonic() - started, 1e-9))
    return count, digest


async def replay(settings: Settings, *, progress: Progress | None = None) -> tuple[int, str]:
    """Rebuild into a new file, then atomically replace the live store with it."""
    live = settings.store_path
    target = live.with_name(live.name + ".rebuild")
    for leftover in (target, target.with_name(target.name + "-wal"), target.with_name(target.name + "-shm")):
        leftover.unlink(missing_ok=True)
    count, digest = await rebuild(settings, target, progress=progress)
    for stale in (live.with_name(live.name + "-wal"), live.with_name(live.name + "-shm")):
        stale.unlink(missing_ok=True)
    os.replace(target, live)
    return count, digest
