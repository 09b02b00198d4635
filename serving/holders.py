"""A model holder per family: the version being served, swapped without a restart and without a failed request.

A swap verifies the version against its manifest, loads and warms it up off the event loop, and only then
replaces the reference. A request takes `holder.current` once at its start, so requests in flight finish on the
model they started with; the old model is freed when the last of them ends. Any failure keeps the old model.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from learnstream.metrics import SERVED_VERSION, SWAP_SECONDS, SWAPS
from learnstream.registry import Registry, RegistryError, Version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    version: int
    model: Any  # what the family's loader returned


class ModelHolder:
    def __init__(self, family: str, registry: Registry, *, load: Callable[[Version], Any]) -> None:
        """load(version) -> a ready model (loaded AND warmed up); it runs in a worker thread."""
        self.family = family
        self.registry = registry
        self._load = load
        self.current: Served | None = None
        self._swap_lock = asyncio.Lock()

    @property
    def version(self) -> int | None:
        return None if self.current is None else self.current.version

    async def load_served(self) -> bool:
        """Serve the registry's served version (at start, and to reconcile after a missed event)."""
        number = self.registry.served(self.family)
        if number is None or number == self.version:
            return False
        return await self.swap_to(number)

    async def swap_to(self, number: int, *, manifest_sha256: str | None = None) -> bool:
        async with self._swap_lock:  # one swap at a time; the next event waits for this one
            if number == self.version:
                return True
            started = time.monotonic()
            try:
                version = self.registry.verify(self.family, number, manifest_sha256=manifest_sha256)
                model = await asyncio.to_thread(self._load, version)
            except (RegistryError, OSError, ValueError, RuntimeError) as exc:
                SWAPS.labels(family=self.family, result="failed").inc()
                log.error("%s: version %d not swapped in (%s); still serving version %s",
                          self.family, number, exc, self.version)
                return False
            self.current = Served(number, model)
            del model
            gc.collect()  # the previous model goes as soon as its last request ends: memory stays flat
            SWAPS.labels(family=self.family, result="ok").inc()
            SWAP_SECONDS.labels(family=self.family).observe(time.monotonic() - started)
            SERVED_VERSION.labels(family=self.family).set(number)
            log.info("%s: Using local AI model v%d (swapped in %.2fs)", self.family, number,
                     time.monotonic() - started)
            return True
