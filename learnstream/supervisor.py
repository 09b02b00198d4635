"""Background loops that outlive their errors: each is restarted with a growing pause, counted, and its state is
what the health checks report.

    supervisor = Supervisor()
    loop = supervisor.start("store-writer", writer.run, waiting=writer.waiting_on)
    supervisor.down()        # loops waiting on a transient failure or to restart, or ended by a fatal error
    await writer.stop()      # the service's stop() makes its run() return ...
    await loop.stop()        # ... and this waits for that (supervisor.stop() does it for every loop)

A loop that returns has been stopped. One that raises is restarted after 0.5 s, then twice as long each time up to
30 s (learnstream_background_restarts_total{task}); a loop that silently ended would leave a role that looks alive
and does nothing. An error listed in `fatal` (a Kafka refusal no retry mends, learnstream/transient.py) is not
retried: the loop ends in state "failed" and wait() raises it. A running loop whose `waiting` callable names a
failure (a stage retrying a batch while the disk or the broker is away) is in state "waiting": up, but stalled.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from learnstream.metrics import BACKGROUND_RESTARTS
from learnstream.transient import StageStopped

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (0.5, 30.0)  # first and longest wait before a loop restarts after an error


@dataclass
class Supervised:
    name: str
    run: Callable[[], Awaitable[None]]
    waiting: Callable[[], str | None] | None = None  # what a running loop is stalled on, if anything
    fatal: tuple[type[BaseException], ...] = (StageStopped,)
    status: str = "running"  # running | restarting | stopped | failed
    restarts: int = 0
    task: asyncio.Task | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def state(self) -> str:
        """status, or "waiting" while a running loop is stalled on a transient failure."""
        if self.status == "running" and self.waiting is not None and self.waiting() is not None:
            return "waiting"
        return self.status

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
            self.status = "running"
            try:
                await self.run()
                self.status = "stopped"
                return
            except self.fatal:
                self.status = "failed"
                raise
            except Exception as exc:  # noqa: BLE001 - supervised: logged, counted, restarted
                self.status = "restarting"
                self.restarts += 1
                BACKGROUND_RESTARTS.labels(task=self.name).inc()
                # The type and where it was raised, not its message: that may quote the record the loop was on.
                where = traceback.extract_tb(exc.__traceback__)[-1]
                log.error("%s failed (%s at %s:%d); restarting in %.1f s", self.name, type(exc).__name__,
                          Path(where.filename).name, where.lineno, backoff)
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=backoff)
                except TimeoutError:
                    pass
                backoff = min(backoff * 2, RESTART_BACKOFF_S[1])
        self.status = "stopped"


class Supervisor:
    def __init__(self) -> None:
        self.loops: dict[str, Supervised] = {}

    def start(self, name: str, run: Callable[[], Awaitable[None]], *,
              waiting: Callable[[], str | None] | None = None) -> Supervised:
        loop = self.loops[name] = Supervised(name, run, waiting)
        loop.task = asyncio.create_task(loop.keep_running(), name=name)
        return loop

    def health(self) -> dict[str, dict[str, object]]:
        """Each loop's state and restarts, and for a waiting one what it waits on."""
        health: dict[str, dict[str, object]] = {}
        for name, loop in self.loops.items():
            health[name] = {"state": loop.state, "restarts": loop.restarts}
            if health[name]["state"] == "waiting":
                health[name]["waiting_on"] = loop.waiting()
        return health

    def down(self) -> list[str]:
        return [name for name, loop in self.loops.items() if loop.state in ("waiting", "restarting", "failed")]

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
