"""The training store: a SQLite materialized view of the *.anon topics (rebuildable by `learnstream replay`).

A sample is stored as it is on its topic: routing fields in the clear (pseudonymous event id, time, owner, group)
and its content sealed under its owner's key (learnstream/keystore.py). So the store is encrypted at rest per
person, a sample is written without being decrypted or re-encoded, and erasure's crypto-shredding reaches every
copy of the store too. Readers unseal with the key store (`samples`).

Every write is idempotent: samples on event_id, DLQ index rows on (topic, partition, offset), so a redelivered
batch changes nothing. One transaction per batch; the caller commits Kafka offsets only after it returns.
Row ids grow monotonically and are the trainer's watermark (the seed's "last_trained_id").
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, AsyncIterator, Collection

import aiosqlite
import orjson
from cryptography.exceptions import InvalidTag

from learnstream.keystore import KeyStore, unseal
from learnstream.wal import enable_wal
from schemas import utc_instant

log = logging.getLogger(__name__)

# Up to 64 MiB of pages per connection: enough to keep the event_id index, which every insert visits at a random
# place, from being read back from the file for each batch.
CACHE_SIZE_PRAGMA = "PRAGMA cache_size=-65536"

_SCHEMA = f"""
PRAGMA secure_delete=ON;
{CACHE_SIZE_PRAGMA};
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    family TEXT NOT NULL,
    ts TEXT NOT NULL,             -- what erasure compares: the raw record's append time (broker), else the app's ts
    owner TEXT NOT NULL,          -- pseudonymous user
    grp TEXT NOT NULL,            -- pseudonymous session (chat) or image_id (image)
    body BLOB NOT NULL            -- the anonymized sample as on its topic: JSON, content sealed
);
CREATE INDEX IF NOT EXISTS samples_family ON samples(family, id);
CREATE INDEX IF NOT EXISTS samples_owner ON samples(owner);
CREATE TABLE IF NOT EXISTS skipped (event_id TEXT PRIMARY KEY, family TEXT NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dlq (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    source_topic TEXT NOT NULL, reason TEXT NOT NULL, ts TEXT NOT NULL,
    PRIMARY KEY (topic, partition, offset)
);
-- The latest generation of a DLQ entry that failed again after a redrive, and of the latest redrive: an entry is
-- outstanding until redriven, and again when the redriven record fails (failed >= redriven).
CREATE TABLE IF NOT EXISTS dlq_redrives (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    failed INTEGER NOT NULL, redriven INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, offset)
);
-- ts: the owner's latest erasure's instant (its request's append time on the broker, else the app's ts). An erasure
-- removes everything up to its instant, so the latest one covers every earlier one.
CREATE TABLE IF NOT EXISTS erasures (owner TEXT PRIMARY KEY, ts TEXT NOT NULL);
-- Which stored sample ids an erasure removed: the registry marks versions trained on them.
CREATE TABLE IF NOT EXISTS erased_samples (
    id INTEGER PRIMARY KEY, family TEXT NOT NULL, erased_at TEXT NOT NULL
);
"""


# Rows a reader takes from SQLite at a time: its memory is a chunk, not the store.
READ_CHUNK_ROWS = 500

# (event_id, family, ts, owner, group, body): a sample's routing fields beside the record as on its topic.
SampleRow = tuple[str, str, str, str, str, bytes]
# The field a family's samples are grouped by (the grp column): conversations, images.
GROUP_FIELDS = {"chat": "session", "image": "image_id"}


@dataclass
class Batch:
    """What one consumer batch makes durable, written in one transaction."""

    samples: list[SampleRow] = field(default_factory=list)  # anonymized samples (chat/image .sample.v1)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (event_id, family, reason)
    dlq: list[tuple[str, int, int, str, str, str]] = field(default_factory=list)  # topic, partition, offset, source, reason, ts
    dlq_redrives: list[tuple[str, int, int, int, int]] = field(default_factory=list)  # topic, partition, offset, failed, redriven
    erasures: list[tuple[str, str]] = field(default_factory=list)  # (owner pseudonym, ts)


def erasure_instant(sample: dict[str, Any]) -> str:
    """What an erasure compares a sample with: its raw record's append time (broker), else the app's ts."""
    return sample.get("appended_at") or sample["ts"]


def sample_row(sample: dict[str, Any], body: bytes) -> SampleRow:
    """A validated anonymized sample (decoded from `body`, its record) as a row."""
    family = sample["schema"].split(".", 1)[0]
    return sample["event_id"], family, erasure_instant(sample), sample["owner"], sample[GROUP_FIELDS[family]], body


def utc_microseconds(text: str) -> int | None:
    """SQL function utc_us(ts): a timestamp as microseconds since the epoch, so that SQL compares instants, not
    strings ("...06:00+02:00" is before "...05:00Z"); NULL when it does not parse."""
    try:
        instant = utc_instant(text)
    except (TypeError, ValueError):
        return None
    return (instant - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _after(sample_ts: str, erasure_ts: str) -> bool:
    """Whether a sample's instant is after an erasure's (as in SQL: one that does not parse is not)."""
    sample, erasure = utc_microseconds(sample_ts), utc_microseconds(erasure_ts)
    return sample is not None and erasure is not None and erasure < sample


class Store:
    """Open with `await Store.open(path)` or `async with Store(path) as store`."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0) -> None:
        """busy_timeout_s: how long a write waits for another connection's lock before SQLite says it is busy
        (a transient failure: the store writer's batch waits and is retried)."""
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._db: aiosqlite.Connection | None = None

    async def start(self) -> "Store":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(enable_wal, self.path)
        self._db = await aiosqlite.connect(self.path, timeout=self.busy_timeout_s)
        await self._db.create_function("utc_us", 1, utc_microseconds, deterministic=True)
        await self._db.executescript(_SCHEMA)
        await self._db.commit()
        return self

    async def stop(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def __aenter__(self) -> "Store":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store is not open: call start() or use `async with`")
        return self._db

    async def write(self, batch: Batch) -> dict[str, tuple[int, int]]:
        """Apply a batch atomically. Erasures win over samples of the same owner with an earlier or equal ts,
        whichever order their topics' partitions delivered them in. Returns, per family whose stored samples the
        batch's erasures removed, (how many, the lowest removed id): the trainer retrains from scratch when a model
        may have seen them."""
        db = self.db
        await db.execute("BEGIN IMMEDIATE")
        try:
            # Every erasure counts: a person who came back and was erased again is erased up to the later one,
            # whichever order the ledger entries arrive in.
            await db.executemany(
                "INSERT INTO erasures(owner, ts) VALUES (?, ?) ON CONFLICT(owner) DO UPDATE SET ts = excluded.ts "
                "WHERE utc_us(excluded.ts) > utc_us(erasures.ts)", batch.erasures
            )
            await db.executemany(
                "INSERT INTO samples(event_id, family, ts, owner, grp, body) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(event_id) DO NOTHING",
                await self._not_erased(batch.samples),
            )
            await db.executemany("INSERT OR IGNORE INTO skipped VALUES (?, ?, ?)", batch.skipped)
            # An entry written again after a redrive replaces the first one's reason: the latest failure is the news.
            await db.executemany(
                "INSERT INTO dlq VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE "
                "SET reason = excluded.reason, ts = excluded.ts", batch.dlq
            )
            await db.executemany(
                "INSERT INTO dlq_redrives VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE "
                "SET failed = MAX(failed, excluded.failed), redriven = MAX(redriven, excluded.redriven)",
                batch.dlq_redrives,
            )
            erased: dict[str, tuple[int, int]] = {}
            for owner, ts in batch.erasures:
                for family, count, lowest in await self._erase(owner, ts):
                    before = erased.get(family, (0, lowest))
                    erased[family] = (before[0] + count, min(before[1], lowest))
            await db.commit()
            return erased
        except BaseException:
            await db.rollback()
            raise

    async def _not_erased(self, rows: list[SampleRow]) -> list[SampleRow]:
        """The rows except samples of erased owners dated at or before their erasure: one lookup per batch rather
        than a subquery per inserted row."""
        if not rows:
            return rows
        owners = orjson.dumps(sorted({row[3] for row in rows})).decode()
        async with self.db.execute(
            "SELECT owner, ts FROM erasures WHERE owner IN (SELECT value FROM json_each(?))", (owners,)
        ) as cursor:
            erased = dict(await cursor.fetchall())
        if not erased:
            return rows
        return [row for row in rows if row[3] not in erased or _after(row[2], erased[row[3]])]

    async def _erase(self, owner: str, ts: str) -> list[tuple[str, int, int]]:
        """Delete an owner's samples up to the erasure; (family, count, lowest id) of what went."""
        # A sample whose instant does not parse (none does, past the store writer's checks) counts as before it.
        erased, args = "owner = ? AND COALESCE(utc_us(ts) <= ?, 1)", (owner, utc_microseconds(ts))
        removed = await self.db.execute_fetchall(
            f"SELECT family, COUNT(*), MIN(id) FROM samples WHERE {erased} GROUP BY family", args
        )
        await self.db.execute(
            f"INSERT OR IGNORE INTO erased_samples(id, family, erased_at) SELECT id, family, ? FROM samples "
            f"WHERE {erased}", (ts, *args),
        )
        await self.db.execute(f"DELETE FROM samples WHERE {erased}", args)
        return [tuple(row) for row in removed]

    async def watermark(self, family: str) -> int:
        """The highest stored sample id of a family (0 when none)."""
        row = await (await self.db.execute("SELECT MAX(id) FROM samples WHERE family = ?", (family,))).fetchone()
        return row[0] or 0

    async def count(self, family: str, *, after: int = 0, up_to: int | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM samples WHERE family = ? AND id > ?", [family, after]
        if up_to is not None:
            sql, args = sql + " AND id <= ?", [*args, up_to]
        row = await (await self.db.execute(sql, args)).fetchone()
        return row[0]

    async def samples(self, family: str, *, keys: KeyStore, up_to: int | None = None
                      ) -> list[tuple[int, dict[str, Any]]]:
        """Every (id, sample) pair of iter_samples, as a list."""
        return [pair async for pair in self.iter_samples(family, keys=keys, up_to=up_to)]

    async def iter_samples(self, family: str, *, keys: KeyStore, up_to: int | None = None,
                           groups: Collection[str] | None = None) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        """(id, sample) pairs in id order, up to a watermark, content unsealed, read READ_CHUNK_ROWS at a time;
        with `groups`, only the samples of those groups (chat: conversations). A sample whose key is gone (its
        owner was erased, and the ledger has not reached this store yet) or that fails to unseal is left out."""
        sql, args = "SELECT id, body FROM samples WHERE family = ?", [family]
        if up_to is not None:
            sql, args = sql + " AND id <= ?", [*args, up_to]
        if groups is not None:
            sql, args = sql + " AND grp IN (SELECT value FROM json_each(?))", [*args, orjson.dumps(list(groups)).decode()]
        unreadable = 0
        async with self.db.execute(sql + " ORDER BY id", args) as cursor:
            while rows := await cursor.fetchmany(READ_CHUNK_ROWS):
                for row_id, body in rows:
                    record = orjson.loads(body)
                    try:
                        sample = unseal(record, keys) if "sealed" in record else record
                    except (InvalidTag, ValueError, KeyError, TypeError):
                        sample, unreadable = None, unreadable + 1
                    if sample is not None:
                        yield row_id, sample
        if unreadable:
            log.warning("%d stored %s samples failed to unseal (tampered or corrupt) and were left out",
                        unreadable, family)

    async def groups(self, family: str, *, up_to: int) -> list[tuple[str, int]]:
        """(group, its newest sample id) of every group of a family's samples up to a watermark (chat: the
        conversations), in the order of their first sample."""
        return [(group, newest) for group, newest in await self.db.execute_fetchall(
            "SELECT grp, MAX(id) FROM samples WHERE family = ? AND id <= ? GROUP BY grp ORDER BY MIN(id)",
            (family, up_to))]

    async def skipped_count(self, family: str, reason: str = "no_consent") -> int:
        """Events not stored for a reason: "no_consent", or "erased" (in flight when their owner was erased)."""
        row = await (await self.db.execute("SELECT COUNT(*) FROM skipped WHERE family = ? AND reason = ?",
                                           (family, reason))).fetchone()
        return row[0]

    async def dlq_by_reason(self, family: str, *, redriven: bool = False) -> dict[str, int]:
        """Outstanding DLQ entries of a family's topics (raw and anon) by reason, one per source event; with
        redriven, those redriven since and not failed again instead."""
        rows = await (
            await self.db.execute(
                "SELECT reason, COUNT(*) FROM dlq LEFT JOIN dlq_redrives USING (topic, partition, offset) "
                f"WHERE source_topic LIKE ? AND COALESCE(failed >= redriven, 1) = {0 if redriven else 1} "
                "GROUP BY reason ORDER BY reason",
                (f"%{family}.%",),
            )
        ).fetchall()
        return {reason: n for reason, n in rows}

    async def erased_owners(self) -> set[str]:
        """Pseudonyms of every erased owner (serving hides their images before the next run)."""
        rows = await (await self.db.execute("SELECT owner FROM erasures")).fetchall()
        return {row[0] for row in rows}

    async def erasures(self) -> dict[str, str]:
        """Erased owner pseudonym -> their latest erasure's ts (learnstream/lineage.py marks the versions holding their
        data)."""
        rows = await (await self.db.execute("SELECT owner, ts FROM erasures")).fetchall()
        return {owner: ts for owner, ts in rows}

    async def erased_samples(self, family: str) -> list[tuple[int, str]]:
        """(sample id, erased_at) of erased samples: the registry marks versions trained on them."""
        rows = await (
            await self.db.execute("SELECT id, erased_at FROM erased_samples WHERE family = ? ORDER BY id", (family,))
        ).fetchall()
        return [(row[0], row[1]) for row in rows]

    async def content_hash(self) -> str:
        """A digest of everything derived from the topics, independent of row ids and arrival order.
        A store rebuilt by replay has the same hash as the live one."""
        digest = hashlib.sha256()
        queries = (
            "SELECT event_id, body FROM samples ORDER BY event_id",
            "SELECT event_id, family, reason FROM skipped ORDER BY event_id",
            "SELECT owner, ts FROM erasures ORDER BY owner",
        )
        for sql in queries:
            async with self.db.execute(sql) as cursor:
                # Thousands of rows per trip to SQLite's thread and per digest update: the store may be large.
                while rows := await cursor.fetchmany(5000):
                    digest.update(b"".join((column if isinstance(column, bytes) else str(column).encode()) + b"\x1f"
                                           for row in rows for column in row))
            digest.update(b"\x00")
        return digest.hexdigest()
