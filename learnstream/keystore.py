"""Per-person data keys for crypto-shredding the long-retention *.anon topics.

The anonymizer seals each sample's content (text, scores, captions, embeddings, faces) with its owner's data key
(AES-256-GCM) before it goes on a *.anon topic; the store keeps it sealed and its readers unseal it. Erasure
destroys the owner's keys: every copy of their samples in the topic, its replicas, the store and any backup becomes
unreadable at once, with no rewrite of the log (Kafka cannot delete single records from a non-compacted topic).
The identifiers left in the clear (event id, time, pseudonyms) carry no content and are unlinkable without the
pseudonym key.

Keys live in SQLite beside the store (<data_dir>/keys.sqlite), with secure_delete so a destroyed key is overwritten
on disk, not just unlinked from a page. Several hosts share it like the registry (a shared filesystem).
"""

from __future__ import annotations

import base64
import os
import sqlite3
import threading
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from learnstream.config import Settings
from learnstream.wal import enable_wal

# The fields of a sample that carry content; everything else stays readable for routing, dedupe and erasure.
SEALED_FIELDS = ("text", "mood", "assessment", "caption", "tags", "category", "embedding", "faces", "exif")


class _KeyCache:
    """kid -> key for the `size` most recently used kids: a bounded memory however many owners there are."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._keys: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, kid: str) -> bytes | None:
        with self._lock:
            key = self._keys.get(kid)
            if key is not None:
                self._keys.move_to_end(kid)
            return key

    def put(self, kid: str, key: bytes) -> None:
        with self._lock:
            self._keys[kid] = key
            self._keys.move_to_end(kid)
            while len(self._keys) > self._size:
                self._keys.popitem(last=False)

    def drop(self, kid: str) -> None:
        with self._lock:
            self._keys.pop(kid, None)


class KeyStore:
    def __init__(self, path: Path, *, cache_size: int = Settings.key_cache_size) -> None:
        """cache_size: keys kept in memory (Settings.key_cache_size); the others are read from the file when used."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        enable_wal(self.path)
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute("CREATE TABLE IF NOT EXISTS keys (kid TEXT PRIMARY KEY, owner TEXT NOT NULL, key BLOB)")
        self._db.execute("CREATE INDEX IF NOT EXISTS keys_owner ON keys(owner)")
        # When each erased owner's erasure was appended (broker clock, ms): their raw events appended until then, and
        # still in flight when their keys went, get no new key (see key_for_owner).
        self._db.execute("CREATE TABLE IF NOT EXISTS erased (owner TEXT PRIMARY KEY, appended_ms INTEGER NOT NULL)")
        self._lock = threading.Lock()
        self._cache = _KeyCache(cache_size)  # dropped for an owner on erasure

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "KeyStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def key_for_owner(self, owner: str, *, appended_ms: int | None = None) -> tuple[str, bytes] | None:
        """The owner's current (kid, key), created on first use; None for an event appended (`appended_ms`, broker
        clock) at or before the owner's erasure, which must not be sealed under a fresh key. The check and the key's
        creation are one transaction, so an erasure another anonymizer applies meanwhile cannot slip between them."""
        with self._transaction():
            if appended_ms is not None and self._db.execute(
                    "SELECT 1 FROM erased WHERE owner = ? AND appended_ms >= ?", (owner, appended_ms)).fetchone():
                return None
            row = self._db.execute("SELECT kid, key FROM keys WHERE owner = ? LIMIT 1", (owner,)).fetchone()
            if row is None:
                kid, key = base64.urlsafe_b64encode(os.urandom(12)).decode(), AESGCM.generate_key(bit_length=256)
                self._db.execute("INSERT INTO keys VALUES (?, ?, ?)", (kid, owner, key))
                row = (kid, key)
            self._cache.put(row[0], row[1])
            return row[0], row[1]

    def key(self, kid: str) -> bytes | None:
        """A key by id, or None once destroyed."""
        if (cached := self._cache.get(kid)) is not None:
            return cached
        with self._lock:
            row = self._db.execute("SELECT key FROM keys WHERE kid = ?", (kid,)).fetchone()
        if row is not None:
            self._cache.put(kid, row[0])
        return None if row is None else row[0]

    def destroy(self, owner: str, *, appended_ms: int | None = None) -> int:
        """Crypto-shred an owner: their keys are gone from memory and (overwritten) from disk. appended_ms: when the
        erasure request was appended (broker clock); their events appended until then get no new key."""
        with self._transaction():
            kids = [r[0] for r in self._db.execute("SELECT kid FROM keys WHERE owner = ?", (owner,))]
            self._db.execute("DELETE FROM keys WHERE owner = ?", (owner,))
            if appended_ms is not None:
                self._db.execute("INSERT INTO erased VALUES (?, ?) ON CONFLICT(owner) DO UPDATE "
                                 "SET appended_ms = MAX(appended_ms, excluded.appended_ms)", (owner, appended_ms))
            for kid in kids:
                self._cache.drop(kid)
        return len(kids)


def seal(sample: dict[str, Any], keys: KeyStore, *, appended_ms: int | None = None) -> dict[str, Any] | None:
    """The sample with its content fields replaced by one AES-GCM blob under the owner's key; None when its raw event
    was appended (`appended_ms`) at or before its owner's erasure."""
    content = {f: sample[f] for f in SEALED_FIELDS if f in sample}
    owner_key = keys.key_for_owner(sample["owner"], appended_ms=appended_ms)
    if owner_key is None:
        return None
    kid, key = owner_key
    nonce = os.urandom(12)
    # The event id is bound as associated data: a sealed blob cannot be replayed under another event.
    blob = AESGCM(key).encrypt(nonce, orjson.dumps(content), sample["event_id"].encode())
    clear = {k: v for k, v in sample.items() if k not in SEALED_FIELDS}
    return {**clear, "kid": kid, "sealed": base64.b64encode(nonce + blob).decode()}


def unseal(record: dict[str, Any], keys: KeyStore) -> dict[str, Any] | None:
    """The sample back, or None when its key was destroyed (its owner was erased)."""
    key = keys.key(record["kid"])
    if key is None:
        return None
    raw = base64.b64decode(record["sealed"])
    content = orjson.loads(AESGCM(key).decrypt(raw[:12], raw[12:], record["event_id"].encode()))
    clear = {k: v for k, v in record.items() if k not in ("kid", "sealed")}
    return {**clear, **content}
