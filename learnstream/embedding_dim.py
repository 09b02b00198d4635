"""The deployment's image embedding dimension: every image (and face) embedding on image.anon has it.

Configured (LEARNSTREAM_EMBEDDING_DIM), or else decided once from the first batch of image events that become
samples (the length most of them have, so one odd event first does not decide it) and recorded in
<data_dir>/embedding_dim.json. The record is written aside and linked into place, which fails if another anonymizer
recorded one first: every replica, and every restart, uses the one recorded. An event whose embedding has another
length goes to the DLQ ("invalid_value" at embedding); set the dimension when the first events may be wrong.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import orjson

log = logging.getLogger(__name__)


class EmbeddingDim:
    def __init__(self, *, configured: int | None = None, path: Path | None = None) -> None:
        """path: where the decided dimension is recorded; None keeps it in memory (`learnstream anonymize`)."""
        self.path = path
        self._value = configured
        recorded = self._read()
        if configured is not None and recorded not in (None, configured):
            log.warning("embedding dimension: %d is configured, %s recorded %d; using %d", configured, path, recorded,
                        configured)
        elif configured is None:
            self._value = recorded

    @property
    def value(self) -> int | None:
        if self._value is None:  # another replica may have decided it since
            self._value = self._read()
        return self._value

    def decide(self, dim: int) -> int:
        """Record dim unless a dimension is known already; returns the one in force."""
        if self.value is not None:
            return self._value
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            aside = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}")
            aside.write_bytes(orjson.dumps({"embedding_dim": dim}))
            try:
                os.link(aside, self.path)  # atomic, and refused when another anonymizer was first
                log.info("embedding dimension %d recorded in %s", dim, self.path)
            except FileExistsError:
                pass
            finally:
                aside.unlink()
            dim = self._read()
        self._value = dim
        return dim

    def _read(self) -> int | None:
        if self.path is None:
            return None
        try:
            return orjson.loads(self.path.read_bytes())["embedding_dim"]
        except FileNotFoundError:
            return None
