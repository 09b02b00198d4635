"""Per-person data keys for crypto-shredding the long-retention *.anon topics.

The anonymizer seals each sample's content (text, scores, captions, embeddings, faces) with its owner's data key
(AES-256-GCM) before it goes on a *.anon topic; the store keeps it sealed and its readers unseal it. Erasure
destroys the owner's keys: every copy of their samples in the topic, its replicas, the store and any backup becomes
unreadable at once, with no rewrite of the log (Kafka cannot delete single records from a non-compacted topic).
The identifiers left in the clear (event id, time, pseudonyms) carry no content and are unlinkable without the
pseudonym key.

Each owner's keys form a tree over the broker's append instants (learnstream/key_tree.py): a sample is sealed under
the key of its raw record's append millisecond, and an erasure keeps only the nodes that derive the instants after
it. So an erasure makes exactly the samples appended up to it unreadable, wherever they are, and leaves readable one
appended after it that was sealed before the erasure was applied (its topic was read first): new data under the
person's new consent, as the store keeps it.

Keys live in SQLite beside the store (<data_dir>/keys.sqlite), with secure_delete so a destroyed key is overwritten
on disk, not just unlinked from a page. Several hosts share it like the registry (a shared filesystem).
"""

from __future__ import annotations

import base64
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from learnstream import key_tree
from learnstream.config import Settings
from learnstream.wal import enable_wal

# The fields of a sample that carry content; everything else stays readable for routing, dedupe and erasure.
SEALED_FIELDS = ("text", "mood", "assessment", "caption", "tags", "category", "embedding", "faces", "exif")


class _Recent:
    """The `size` most recently used entries of a mapping: a bounded memory however many owners there are."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> Any:
        with self._lock:
            value = self._entries.get(name)
            if value is not None:
                self._entries.move_to_end(name)
            return value

    def put(self, name: str, value: Any) -> None:
        with self._lock:
            self._entries[name] = value
            self._entries.move_to_end(name)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def drop(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)


class KeyStore:
    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0, cache_size: int = Settings.key_cache_size) -> None:
        """busy_timeout_s: how long a write waits for another connection's lock before SQLite says it is busy
        (a transient failure: the anonymizer's batch waits and is retried).
        cache_size: owners' trees (and keys from before the trees) kept in memory (Settings.key_cache_size); the
        others are read from the file when used."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        enable_wal(self.path)
        self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA secure_delete=ON")
        # Per owner, the tree nodes that derive the keys of every instant after their latest erasure (all, before).
        self._db.execute("CREATE TABLE IF NOT EXISTS nodes (owner TEXT NOT NULL, height INTEGER NOT NULL, "
                         "idx INTEGER NOT NULL, key BLOB NOT NULL, PRIMARY KEY (owner, height, idx))")
        # Keys of samples sealed before the trees (a random kid per owner key): read, destroyed, never made again.
        self._db.execute("CREATE TABLE IF NOT EXISTS keys (kid TEXT PRIMARY KEY, owner TEXT NOT NULL, key BLOB)")
        self._db.execute("CREATE INDEX IF NOT EXISTS keys_owner ON keys(owner)")
        # When each erased owner's latest erasure was appended (broker clock, ms): their raw events appended until
        # then, and still in flight when it was applied, get no key (see key_for_owner).
        self._db.execute("CREATE TABLE IF NOT EXISTS erased (owner TEXT PRIMARY KEY, appended_ms INTEGER NOT NULL)")
        self._lock = threading.Lock()
        # owner -> their stored nodes, and the blocks derived from them; both dropped for an owner on erasure
        self._trees = _Recent(cache_size)
        self._blocks = key_tree.Blocks()
        self._legacy = _Recent(cache_size)  # kid -> key of a sample sealed before the trees

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

    def _nodes(self, owner: str) -> key_tree.Nodes:
        rows = self._db.execute("SELECT height, idx, key FROM nodes WHERE owner = ?", (owner,))
        return {(height, idx): key for height, idx, key in rows}

    def _replace_nodes(self, owner: str, nodes: key_tree.Nodes) -> None:
        self._db.execute("DELETE FROM nodes WHERE owner = ?", (owner,))
        self._db.executemany("INSERT INTO nodes VALUES (?, ?, ?, ?)",
                             [(owner, height, idx, key) for (height, idx), key in nodes.items()])

    def key_for_owner(self, owner: str, *, appended_ms: int | None = None) -> tuple[str, bytes] | None:
        """The (kid, key) to seal an owner's event appended at `appended_ms` (broker clock; now when unknown), their
        tree made on first use; None for an event appended at or before the owner's latest erasure, which must not
        be sealed under a key that outlives it. The check and the tree's creation are one transaction, so an erasure
        another anonymizer applies meanwhile cannot slip between them. (An owner's tree is only ever cut, never
        replaced, so nodes remembered from before an erasure still give the very keys of the instants after it.)"""
        instant = _now_ms() if appended_ms is None else appended_ms
        with self._transaction():
            row = self._db.execute("SELECT appended_ms FROM erased WHERE owner = ?", (owner,)).fetchone()
            if row is not None and instant <= row[0]:
                return None
            nodes = self._trees.get(owner)
            if nodes is None:
                nodes = self._nodes(owner)
                if not nodes:
                    nodes = key_tree.new_tree(after=None if row is None else row[0])
                    self._replace_nodes(owner, nodes)
                self._trees.put(owner, nodes)
            key = self._blocks.leaf(owner, nodes, instant)
        return None if key is None else (f"{KID_PREFIX}{instant}", key)

    def key(self, kid: str, owner: str) -> bytes | None:
        """The key a sample of `owner` was sealed under, or None once its instant was erased."""
        if not kid.startswith(KID_PREFIX):
            return self._legacy_key(kid)
        try:
            instant = int(kid.removeprefix(KID_PREFIX))
        except ValueError:
            return None
        with self._lock:
            nodes = self._trees.get(owner) or self._nodes(owner)
            if nodes:  # none yet: not remembered, another process may make the owner's tree later
                self._trees.put(owner, nodes)
            return self._blocks.leaf(owner, nodes, instant)

    def _legacy_key(self, kid: str) -> bytes | None:
        if (key := self._legacy.get(kid)) is not None:
            return key
        with self._lock:
            row = self._db.execute("SELECT key FROM keys WHERE kid = ?", (kid,)).fetchone()
        if row is None:
            return None
        self._legacy.put(kid, row[0])
        return row[0]

    def destroy(self, owner: str, *, appended_ms: int | None = None) -> int:
        """Crypto-shred an owner up to their erasure request's append time (broker clock; now when unknown): the keys
        of every instant until then are gone from memory and (overwritten) from disk, and their events appended
        until then get no key; those of later instants stay. Returns how many stored nodes or keys went."""
        instant = _now_ms() if appended_ms is None else appended_ms
        with self._transaction():
            legacy = [r[0] for r in self._db.execute("SELECT kid FROM keys WHERE owner = ?", (owner,))]
            self._db.execute("DELETE FROM keys WHERE owner = ?", (owner,))
            self._db.execute("INSERT INTO erased VALUES (?, ?) ON CONFLICT(owner) DO UPDATE "
                             "SET appended_ms = MAX(appended_ms, excluded.appended_ms)", (owner, instant))
            latest = self._db.execute("SELECT appended_ms FROM erased WHERE owner = ?", (owner,)).fetchone()[0]
            nodes = self._nodes(owner)
            kept = key_tree.puncture(nodes, after=latest)
            self._replace_nodes(owner, kept)
            self._trees.drop(owner)
            self._blocks.forget(owner)
            for kid in legacy:
                self._legacy.drop(kid)
        return len(legacy) + len(nodes.keys() - kept.keys())


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


KID_PREFIX = "ms:"  # then the append instant; never in a legacy kid (URL-safe base64)


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
    key = keys.key(record["kid"], record["owner"])
    if key is None:
        return None
    raw = base64.b64decode(record["sealed"])
    content = orjson.loads(AESGCM(key).decrypt(raw[:12], raw[12:], record["event_id"].encode()))
    clear = {k: v for k, v in record.items() if k not in ("kid", "sealed")}
    return {**clear, **content}
