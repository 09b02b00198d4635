"""Several processes may create the same SQLite file at once: two store writers started together, say."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from learnstream.keystore import KeyStore
from learnstream.store import Store
from learnstream.wal import enable_wal

RACES = 500  # enough that, without the retry, some of them fail on every run here


def test_two_connections_creating_a_file_at_once_both_succeed(tmp_path: Path) -> None:
    failures: list[sqlite3.OperationalError] = []

    def open_at(path: Path, barrier: threading.Barrier) -> None:
        barrier.wait()
        try:
            enable_wal(path)
        except sqlite3.OperationalError as exc:
            failures.append(exc)

    for n in range(RACES):
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=open_at, args=(tmp_path / f"{n}.sqlite", barrier)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []


def journal_mode(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA journal_mode").fetchone()[0]


async def test_the_store_and_the_key_store_use_wal(tmp_path: Path) -> None:
    async with Store(tmp_path / "store.sqlite"):
        pass
    with KeyStore(tmp_path / "keys.sqlite"):
        pass
    assert journal_mode(tmp_path / "store.sqlite") == journal_mode(tmp_path / "keys.sqlite") == "wal"
