"""Background loops that outlive their errors: each is restarted with a growing pause, counted, and its state is
what the health checks report.

    supervisor = Supervisor()
    loop = supervisor.start("store-writer", writer.run)
    supervisor.down()        # names of the loops waiting to restart, or ended by a fatal error
    await writer.stop()      # the service's stop() makes its run() return ...
    await loop.stop()        # ... and this waits for that (supervisor.stop() does it for every loop)

A loop that returns has been stopped. One that raises is restarted after 0.5 s, then twice as long each time up to
30 s (learnstream_background_restarts_total{task}); a loop that silently ended would leave a role that looks alive
and does nothing. An error listed in `fatal` (a Kafka refusal no retry mends, learnstream/transient.py) is not
retried: the loop ends in state "failed" and wait() raises it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from learnstream.metrics import BACKGROUND_RESTARTS
from learnstream.transient import StageStopped

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (0.5, 30.0)  # first and longest wait before a loop restarts after an error


@dataclass
class Supervised:
    name: str
    run: Callable[[], Awaitable[None]]
    fatal: tuple[type[BaseException], ...] = (StageStopped,)
    state: str = "running"  # running | restarting | stopped | failed
    restarts: int = 0
    task: asyncio.Task | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def up(self) -> bool:
        return self.state == "running"

    async def stop(self) -> None:
        """Ends a restart wait at once, then waits for the loop (its service's stop() ends a running one)."""
        self._stopping.set()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)

    async def keep_running(self) -> None:
        backoff = RESTART_BACKOFF_S[0]
        while not self._stopping.is_set():
            self.state = "running"
            try:
                await self.run()
                self.state = "stopped"
                return
            except self.fatal:
                self.state = "failed"
                raise
            except Exception as exc:  # noqa: BLE001 - supervised: logged, counted, restarted
                self.state = "restarting"
                self.restarts += 1
                BACKGROUND_RESTARTS.labels(task=self.name).inc()
                # The type and message of our own exceptions; a loop's errors name positions, not records.
                log.error("%s failed (%s: %s); restarting in %.1f s", self.name, type(exc).__name__, exc, backoff)
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=backoff)
                except TimeoutError:
                    pass
                backoff = min(backoff * 2, RESTART_BACKOFF_S[1])
        self.state = "stopped"


class Supervisor:
    def __init__(self) -> None:
        self.loops: dict[str, Supervised] = {}

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> Supervised:
        loop = self.loops[name] = Supervised(name, run)
        loop.task = asyncio.create_task(loop.keep_running(), name=name)
        return loop

    def health(self) -> dict[str, dict[str, object]]:
        return {name: {"state": loop.state, "restarts": loop.restarts} for name, loop in self.loops.items()}

    def down(self) -> list[str]:
        return [name for name, loop in self.loops.items() if loop.state in ("restarting", "failed")]

    async def wait(self) -> None:
        """Until a loop ends for good (a fatal error is raised); forever if none does."""
        tasks = [loop.task for loop in self.loops.values()]
        if not tasks:
            await asyncio.Event().wait()
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()

    async def stop(self) -> None:
        await asyncio.gather(*(loop.stop() for loop in self.loops.values()))
        self.loops = {}
