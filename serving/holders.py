"""A model holder per family: the version being served, swapped without a restart and without a failed request.

A swap verifies the version against its manifest, loads and warms it up in the holder's own loader thread, and only
then replaces the reference. A request takes `holder.current` once at its start, so requests in flight finish on the
model they started with. Any failure keeps the old model. The swap lock covers loading and the swap only: the old
model drains (its requests end) and is released in the background, so a rollback never waits for a long request.

Two things keep swaps from hurting the requests around them (measured by bench/swap.py):
* CPU: the loader thread runs at a lower priority (and so do the torch threads it starts), so hashing, reading and
  warming up a new version take the cores only when requests leave them some. A swap under full load takes
  longer; the requests do not.
* Memory: once the last request on the old model ends, its memory is handed back to the OS. glibc otherwise keeps
  the freed blocks of a model this size in its arenas, and the process grows with every swap (as Triton's users
  saw with every reload).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from learnstream.metrics import SERVED_VERSION, SWAP_SECONDS, SWAPS
from learnstream.registry import Registry, Version

log = logging.getLogger(__name__)

LOADER_NICE = 10  # the loader's nice value: CFS then gives it ~1/10 of a core that a request also wants
DRAIN_TIMEOUT_S = 120.0  # longest wait for the requests on an old model before its memory is released anyway


@dataclass(frozen=True)
class Served:
    version: int
    model: Any  # what the family's loader returned


def _lower_priority() -> None:
    """Run in the loader thread: on Linux a nice value set through the thread id applies to that thread only."""
    if sys.platform == "linux":
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, max(LOADER_NICE, os.getpriority(os.PRIO_PROCESS, thread)))


# glibc's malloc_trim returns free heap pages (in every arena) to the OS; other C libraries (musl, macOS) lack it.
MALLOC_TRIM: Callable[[int], int] | None = getattr(ctypes.CDLL(None), "malloc_trim", None)


def release_memory() -> None:
    """Give the heap's free pages back to the OS (a ctypes call: other threads run meanwhile)."""
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)


class ModelHolder:
    def __init__(self, family: str, registry: Registry, *, load: Callable[[Version], Any],
                 unavailable: str | None = None, refusal: Callable[[int], Awaitable[str | None]] | None = None) -> None:
        """load(version) -> a ready model (loaded AND warmed up); it runs in the loader thread. The model must
        support weak references (any ordinary class does): that is how the holder sees the old one go.
        unavailable: why no version can load on this replica (say, a package the loader needs is not installed);
        the holder then serves nothing and tries nothing, rather than failing at every event and reconciliation.
        refusal(version) -> why that version must not be loaded (it holds erased data), or None to load it."""
        self.family = family
        self.registry = registry
        self._load = load
        self.unavailable = unavailable
        self._refusal = refusal
        self._refused: dict[int, str] = {}  # logged once per version and reason: reconciliation asks every 30 s
        self.current: Served | None = None
        self._swap_lock = asyncio.Lock()
        self._releases: set[asyncio.Task] = set()  # replaced models waiting for their last requests to end
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{family}-loader",
                                          initializer=_lower_priority)
        if unavailable is not None:
            log.warning("%s: no model is served on this replica: %s", family, unavailable)

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
        """True once `number` is served. The model it replaces is released once its last request ends (or after
        DRAIN_TIMEOUT_S), in the background: a replaced model is held only while requests still use it."""
        if self.unavailable is not None:
            return False
        async with self._swap_lock:  # one swap at a time; the next event waits for this one
            if number == self.version:
                return True
            if await self._refused_now(number):
                return False
            started = time.monotonic()
            loop = asyncio.get_running_loop()
            try:
                model = await loop.run_in_executor(self._loader, self._verified_load, number, manifest_sha256)
            except Exception as exc:  # whatever goes wrong, the served model stays (docs/ARCHITECTURE.md, "Models")
                SWAPS.labels(family=self.family, result="failed").inc()
                log.error("%s: version %d not swapped in (%s); still serving version %s",
                          self.family, number, exc, self.version)
                return False
            previous, self.current = self.current, Served(number, model)
            del model
            seconds = time.monotonic() - started
            SWAPS.labels(family=self.family, result="ok").inc()
            SWAP_SECONDS.labels(family=self.family).observe(seconds)
            SERVED_VERSION.labels(family=self.family).set(number)
            log.info("%s: Using local AI model v%d (swapped in %.2fs)", self.family, number, seconds)
            if previous is not None:
                unused = weakref.ref(previous.model)
                del previous  # the requests still using it hold the only references left
                release = asyncio.create_task(self._release_when_unused(unused))
                self._releases.add(release)
                release.add_done_callback(self._releases.discard)
            return True

    async def released(self) -> None:
        """Wait until every model replaced so far is released."""
        await asyncio.gather(*self._releases)

    async def _refused_now(self, number: int) -> bool:
        try:
            reason = None if self._refusal is None else await self._refusal(number)
        except Exception as exc:  # noqa: BLE001 - unknown lineage is refused too; reconciliation asks again
            reason = f"its lineage could not be checked: {type(exc).__name__}: {exc}"
        if reason is None:
            self._refused.pop(number, None)
            return False
        if self._refused.get(number) != reason:
            self._refused[number] = reason
            SWAPS.labels(family=self.family, result="rejected").inc()
            log.error("%s: version %d not swapped in: erased data (%s); still serving version %s",
                      self.family, number, reason, self.version)
        return True

    def close(self) -> None:
        """Let the loader thread go (a swap still running finishes first) and stop waiting for old models' drains."""
        self._loader.shutdown(wait=False)
        for release in self._releases:
            release.cancel()

    def _verified_load(self, number: int, manifest_sha256: str | None) -> Any:
        # Verifying hashes every file (~500 MB for DialoGPT-small): here, never on the event loop.
        return self._load(self.registry.verify(self.family, number, manifest_sha256=manifest_sha256))

    async def _release_when_unused(self, unused: weakref.ref) -> None:
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while unused() is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # polling: cheaper and simpler than a finalizer calling into the loop
        if unused() is not None:
            gc.collect()  # a reference cycle (an exception's traceback, say) may be what still holds it
            log.warning("%s: the previous model was still referenced %.0fs after the swap", self.family,
                        DRAIN_TIMEOUT_S)
        await asyncio.to_thread(release_memory)  # at normal priority: a niced thread would make trimming slow
