"""`learnstream replay`: rebuild the store from the *.anon topics (the dataset of record) and swap it in.

1. Rebuild: a new store file beside the live one, from the beginning of every *.anon topic (and the DLQ index) up to
   their end at the start, through the same sorting and the same idempotent, erasure-honouring writes as the store
   writer. Erased owners stay erased: the erasure ledger on the same topics removes their samples (whose keys are
   destroyed anyway).
2. Swap: one SQLite transaction makes the live store's content the rebuilt one. Readers that hold the store open
   (serving, the trainer) see the old content or the new, never a mix; replacing the file itself under open
   connections would corrupt SQLite's write-ahead log. Only the difference is written: samples the rebuild lacks
   are deleted, differing ones overwritten, missing ones added, so replaying onto an intact store writes no sample.
   Every sample keeps the id it has in the live store, because the trainer's watermark and the registry's manifests
   count in those ids; a sample the live store lacked gets an id after every id ever used, so the trainer counts it
   as new.
The store writer must not run meanwhile (records it stored after the rebuild began would be swapped away), so
replay refuses while its consumer group has members.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import aiosqlite

from consumers.store_writer import DLQ_TOPICS, StoreWriterService, sort_record
from learnstream import kafka, topics
from learnstream.config import FAMILIES, Settings
from learnstream.store import Batch, Store
from schemas import InvalidEvent

BATCH = 5000  # records per transaction of the rebuilt store

Progress = Callable[[int, float], None]  # (records read, records per second)

# Tables wholly derived from the topics: replaced by the rebuilt content. erased_samples is not among them: it
# records which live ids an erasure removed, which the topics cannot tell; it is kept and extended (see _swap_in).
_REPLACED_TABLES = ("skipped", "dlq", "erasures")


class ReplayRefused(ValueError):
    """Replay cannot run now; the message says why and what to do."""


@dataclass(frozen=True)
class ReplayResult:
    records: int  # read from the topics
    content_sha256: str  # of the store now live (Store.content_hash)
    # Where the time went, so an operator can tell a slow read from a slow swap: reading the topics into the new
    # file (its content hash included), then the one transaction that makes it live.
    rebuild_seconds: float
    swap_seconds: float


async def rebuild(settings: Settings, target: Path, *, progress: Progress | None = None) -> tuple[int, str]:
    """Build a store at `target` from the topics; returns (records read, content hash)."""
    prefix = settings.topic_prefix
    started, count, batch = time.monotonic(), 0, Batch()
    writing: asyncio.Task | None = None  # the previous batch, written (in SQLite's thread) while the next is decoded
    async with Store(target) as store:
        # A scratch file until the swap: a crash only means replaying again, so no fsync per batch.
        await store.db.execute("PRAGMA synchronous=OFF")
        names = [topics.anon(f) for f in FAMILIES] + list(DLQ_TOPICS)
        async for records in kafka.read_batches_to_end(settings, names):
            for record in records:
                try:
                    sort_record(batch, record.topic.removeprefix(prefix), record.value)
                except InvalidEvent:
                    pass  # the live store writer sent it to the DLQ, which this replay indexes too
            count += len(records)
            if len(batch.samples) >= BATCH:
                if writing is not None:
                    await writing
                writing, batch = asyncio.create_task(store.write(batch)), Batch()
                if progress:
                    progress(count, count / max(time.monotonic() - started, 1e-9))
        if writing is not None:
            await writing
        await store.write(batch)
        digest = await store.content_hash()
    if progress:
        progress(count, count / max(time.monotonic() - started, 1e-9))
    return count, digest


async def replay(settings: Settings, *, progress: Progress | None = None) -> ReplayResult:
    """Rebuild into a new file, then swap its content into the live store atomically."""
    await _refuse_while_store_writer_runs(settings)
    live = settings.store_path
    target = live.with_name(live.name + ".rebuild")
    _remove_database(target)
    try:
        started = time.monotonic()
        count, digest = await rebuild(settings, target, progress=progress)
        rebuild_seconds = time.monotonic() - started
        await _refuse_while_store_writer_runs(settings)  # it may have been started during the rebuild
        async with Store(live) as store:
            started = time.monotonic()
            await _swap_in(store.db, target)
            swap_seconds = time.monotonic() - started
    finally:
        _remove_database(target)
    return ReplayResult(count, digest, rebuild_seconds=rebuild_seconds, swap_seconds=swap_seconds)


async def _refuse_while_store_writer_runs(settings: Settings) -> None:
    _, members = await kafka.describe_group(settings, StoreWriterService.group_id)
    if members:
        raise ReplayRefused(f"the store writer is running ({members} consumer(s) in its group): stop the store role, "
                            "replay, then start it again")


async def _swap_in(db: aiosqlite.Connection, rebuilt: Path) -> None:
    """Replace the live content with the rebuilt store's in one transaction (see the module docstring)."""
    await db.execute("ATTACH DATABASE ? AS rebuilt", (str(rebuilt),))
    try:
        await db.execute("BEGIN IMMEDIATE")
        try:
            await _map_ids(db)
            # Live samples the rebuilt erasure ledger removes: which ids were erased, for the registry's marks.
            await db.execute(
                "INSERT OR IGNORE INTO main.erased_samples(id, family, erased_at) "
                "SELECT l.id, l.family, MIN(e.ts) FROM main.samples l "
                "JOIN rebuilt.erasures e ON e.owner = l.owner AND COALESCE(utc_us(l.ts) <= utc_us(e.ts), 1) "
                "GROUP BY l.id"
            )
            columns = await _shared_columns(db, "samples", exclude="id")
            await db.execute("DELETE FROM main.samples WHERE event_id NOT IN (SELECT event_id FROM rebuilt.samples)")
            rebuilt_row, live_row = _qualified("r", columns), _qualified("samples", columns)
            await db.execute(
                f"UPDATE main.samples SET ({columns}) = ({rebuilt_row}) FROM rebuilt.samples r "
                f"WHERE r.event_id = samples.event_id AND ({rebuilt_row}) IS NOT ({live_row})"
            )
            await db.execute(
                f"INSERT INTO main.samples(id, {columns}) SELECT i.live_id, {_qualified('r', columns)} "
                "FROM rebuilt.samples r JOIN temp.replay_ids i ON i.rebuilt_id = r.id"
            )
            for table in _REPLACED_TABLES:
                columns = await _shared_columns(db, table)
                await db.execute(f"DELETE FROM main.{table}")
                await db.execute(f"INSERT INTO main.{table}({columns}) SELECT {columns} FROM rebuilt.{table}")
            await db.execute("DROP TABLE temp.replay_ids")
            await db.commit()
        except BaseException:
            await db.rollback()
            raise
    finally:
        await db.execute("DETACH DATABASE rebuilt")


async def _map_ids(db: aiosqlite.Connection) -> None:
    """temp.replay_ids(rebuilt_id, live_id): for each rebuilt sample the live store lacks, a new id after every id
    the live store ever used (AUTOINCREMENT never reuses an id, so neither does this)."""
    await db.execute(
        "CREATE TEMP TABLE replay_ids AS SELECT r.id AS rebuilt_id, ROW_NUMBER() OVER (ORDER BY r.id) + MAX("
        "  (SELECT COALESCE(MAX(id), 0) FROM main.samples),"
        "  (SELECT COALESCE(MAX(seq), 0) FROM main.sqlite_sequence WHERE name = 'samples')) AS live_id "
        "FROM rebuilt.samples r WHERE NOT EXISTS (SELECT 1 FROM main.samples l WHERE l.event_id = r.event_id)"
    )


async def _shared_columns(db: aiosqlite.Connection, table: str, *, exclude: str = "") -> str:
    """The columns both stores have (a live store made by an older version may lack new ones), comma-separated."""
    async def names(schema: str) -> list[str]:
        rows = await (await db.execute(f"PRAGMA {schema}.table_info({table})")).fetchall()
        return [row[1] for row in rows]

    rebuilt = set(await names("rebuilt"))
    return ", ".join(c for c in await names("main") if c in rebuilt and c != exclude)


def _qualified(alias: str, columns: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in columns.split(","))


def _remove_database(path: Path) -> None:
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        file.unlink(missing_ok=True)
