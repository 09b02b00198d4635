"""`learnstream up`: run the named roles in one asyncio process until stopped.

    async with Pipeline(settings, roles=ROLES, http_port=8000) as pipeline:
        await pipeline.wait()          # returns when a role stops for good or stop() is called

Roles start in an order that lets each find what it needs: the trainer first (it creates version 0), then the
consumers, then serving (which loads the served version). Every role's loop, and serving's listeners, run under
one Supervisor (learnstream/supervisor.py): a loop that fails is restarted with backoff, and only a failure no
retry mends (learnstream/transient.py) ends the process. Without serving, LEARNSTREAM_METRICS_PORT serves /metrics
and /healthz, which names every loop's state (503 while one is down).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.errors import KafkaConnectionError

from consumers.anonymizer import AnonymizerService
from consumers.store_writer import StoreWriterService
from learnstream.config import FAMILIES, Settings
from learnstream.kafka import ensure_topics
from learnstream.metrics import start_at_zero
from learnstream.supervisor import Supervisor
from serving.app import Serving, metrics_app, run_http
from serving.generation import GenerationSettings
from trainer.service import TrainerService

log = logging.getLogger(__name__)

ROLES = ("anonymizer", "store", "trainer", "serving")
FIRST_BROKER_PAUSE_S = 1.0
MAX_BROKER_PAUSE_S = 30.0


def parse_roles(text: str | None) -> tuple[str, ...]:
    if not text:
        return ROLES
    roles = tuple(r.strip() for r in text.split(",") if r.strip())
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ValueError(f"unknown role(s) {', '.join(unknown)}; roles are {', '.join(ROLES)}")
    return roles


async def _ensure_topics_once_reachable(settings: Settings) -> None:
    """The broker may come up after us (compose starts both at once; a restart of either): wait for it, saying so,
    rather than exit. Anything but an unreachable broker (a refused topic, bad credentials) still fails at once."""
    pause_s = FIRST_BROKER_PAUSE_S
    while True:
        try:
            await ensure_topics(settings)
            return
        except KafkaConnectionError:
            log.warning("Kafka at %s is not reachable; trying again in %.0fs", settings.bootstrap_servers, pause_s)
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, MAX_BROKER_PAUSE_S)


class Pipeline:
    def __init__(self, settings: Settings, *, roles: tuple[str, ...] = ROLES, http_port: int | None = None) -> None:
        self.settings = settings
        self.roles = roles
        self.http_port = settings.http_port if http_port is None else http_port
        self.serving: Serving | None = None
        self._services: list[tuple[str, Any]] = []
        self.supervisor = Supervisor()
        self._runner = None

    async def start(self) -> None:
        settings = self.settings
        settings.key_bytes()  # refuses to start without a pseudonym key (unless dev)
        start_at_zero(FAMILIES)
        await _ensure_topics_once_reachable(settings)
        if "trainer" in self.roles:
            self._services.append(("trainer", TrainerService(settings)))
        if "store" in self.roles:
            self._services.append(("store", StoreWriterService(settings)))
        if "anonymizer" in self.roles:
            self._services.append(("anonymizer", AnonymizerService(settings)))
        try:
            for name, service in self._services:
                await service.start()
                self.supervisor.start(name, service.run, waiting=getattr(service, "waiting_on", None))
            if "serving" in self.roles:
                self.serving = Serving(settings, supervisor=self.supervisor, generation=GenerationSettings(
                    max_new_tokens=settings.chat_max_new_tokens, do_sample=settings.chat_do_sample,
                    temperature=settings.chat_temperature, top_p=settings.chat_top_p, top_k=settings.chat_top_k,
                    repetition_penalty=settings.chat_repetition_penalty))
                await self.serving.start()
                self._runner = await run_http(self.serving.app, host=settings.http_host, port=self.http_port)
                log.info("serving on http://%s:%d", settings.http_host, self.http_port)
            elif settings.metrics_port is not None:
                self._runner = await run_http(metrics_app(self.supervisor), host=settings.http_host,
                                              port=settings.metrics_port)
                log.info("metrics and health on http://%s:%d/metrics and /healthz", settings.http_host,
                         settings.metrics_port)
        except BaseException:
            await self.stop()
            raise
        log.info("learnstream up: %s", ", ".join(self.roles))

    async def wait(self) -> None:
        """Until a role's loop ends for good (a failure no retry mends is re-raised)."""
        await self.supervisor.wait()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.serving is not None:
            await self.serving.stop()
            self.serving = None
        for _, service in reversed(self._services):
            await service.stop()
        await self.supervisor.stop()
        self._services = []

    async def __aenter__(self) -> "Pipeline":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
