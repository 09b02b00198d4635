"""Write-ahead logging for the SQLite files (store, keys), safe when several processes create one at once.

WAL lets readers (serving, the trainer) read while the store writer writes. The mode is a property of the file, set
once by whichever connection gets there first. Two processes opening a new file at the same moment (two store
writers started together) race for that switch, and SQLite answers the loser "database is locked" at once, without
waiting out its busy timeout; so the loser tries again until the winner is done.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

RETRY_S = 0.02
ATTEMPTS = 250  # 5 s: the winner's switch takes milliseconds


def enable_wal(path: Path) -> None:
    """Put the database file at `path` (created if missing) in WAL mode."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        for attempt in range(ATTEMPTS):
            try:
                db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == ATTEMPTS - 1:
                    raise
                time.sleep(RETRY_S)
    finally:
        db.close()
