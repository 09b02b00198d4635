"""The trainer role: counts what is durable in the store and trains a family when it crosses its threshold.

It reads samples.stored (the store writer's watermarks) and training.requests (manual runs), holds the
registry's writer lock for its lifetime (one writer per registry), and runs each training in a child process
(trainer.run) so nothing else waits. Per run, strictly in this order: the version is in the registry with its
decision -> the served pointer moves (if promoted) -> model.updated is published -> the decision joins the
promotion history -> the watermark (last_trained_id) advances. A trainer killed before the history step finishes
that version at its next start (every step is idempotent); killed before the watermark step, it takes the watermark
from the newest version's manifest. Nothing is skipped and no samples are trained twice. The child exits with its
trainer, so a killed trainer leaves no run behind; a trainer taking over waits until it has (see _take_over_when_free).

Manual requests queue in the trainer state (learnstream/training_state.py) before their offset is committed: one
that arrives during a run waits for it, then one run serves every request queued (from scratch if any of them is),
and a trainer killed meanwhile leaves them to the next one. The run's manifest names the newest request it served.

Without the ml extra (torch, transformers, ...) the trainer still starts and counts: a family that is due says
once what is missing and how to install it, and its samples wait in the store, the watermark where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import ConsumerStoppedError, KafkaError

from learnstream import kafka, topics
from learnstream.config import FAMILIES, Settings
from learnstream.extras import TRAINING, MissingPackages
from learnstream.metrics import (TRAINING_FAILURES, TRAINING_LOSS, TRAINING_PROGRESS,
                                 TRAINING_RUNS, TRAINING_SECONDS)
from learnstream.refusals import refuse
from learnstream.registry import Registry, model_updated_event
from learnstream.store import Store
from learnstream.training_state import TrainerBusy, TrainerState
from learnstream.transient import is_fatal, stopped
from schemas import InvalidEvent, parse_internal, utc_now
from trainer.run import ensure_base, run_result, settings_to_json

log = logging.getLogger(__name__)

RETRY_AFTER_FAILURE_S = 10.0

BROKER_RETRY_S = 2
# A standby trainer (a second one on the data dir) asks this often whether the active one's lifetime lock is free.
STANDBY_POLL_S = 1.0
# What a failed training run's error keeps of its child's stderr (the traceback at its end).
STDERR_TAIL_BYTES = 4000


async def publish_model_updated(producer: AIOKafkaProducer, settings: Settings, event: dict[str, Any]) -> None:
    await producer.send_and_wait(topics.prefixed(settings, topics.MODEL_UPDATED), orjson.dumps(event),
                                 key=event["family"].encode())


async def finish_run(settings: Settings, producer: AIOKafkaProducer, result: dict[str, Any]) -> None:
    """Serve (if promoted), announce, record the decision, then advance the watermark: the order that loses nothing."""
    registry = Registry(settings.registry_dir)
    family, number = result["family"], result["version"]
    version = registry.get(family, number)
    if result["decision"] == "promoted":
        with registry.writer_lock():
            registry.set_served(family, number)
    await publish_model_updated(producer, settings, model_updated_event(
        version, decision=result["decision"], reason=result["reason"]))
    with registry.writer_lock():
        registry.record_decision(family, {"ts": utc_now(), "version": number, "decision": result["decision"],
                                          "reason": result["reason"]})
    TrainerState(settings.data_dir).record_run(result, registry_dir=settings.registry_dir)
    with registry.writer_lock():
        registry.prune(family, keep=settings.keep_versions)
    TRAINING_RUNS.labels(family=family, decision=result["decision"]).inc()
    loss = result["metrics"].get("eval_loss")
    if loss is not None:
        TRAINING_LOSS.labels(family=family).set(loss)
    TRAINING_SECONDS.labels(family=family).observe(result["metrics"].get("duration_s", 0))


async def run_child(settings: Settings, family: str, *, after: int, up_to: int, from_scratch: bool, requests: int = 0,
                    on_progress=None) -> dict[str, Any]:
    """Run trainer.run in a child process; returns its result or raises RuntimeError with its stderr tail."""
    args = [sys.executable, "-m", "trainer.run", "--settings-on-stdin", "--family", family,
            "--after", str(after), "--up-to", str(up_to), "--requests", str(requests), "--exit-with-parent"]
    args += ["--from-scratch"] if from_scratch else []
    # The settings (secrets included) go down stdin, never argv, which any local user reads in `ps`. stdin then
    # stays open for the child's lifetime: it closes when this process dies, however it dies.
    child = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                 stderr=asyncio.subprocess.PIPE, cwd=Path(__file__).parent.parent)
    child.stdin.write(settings_to_json(settings).encode() + b"\n")
    await child.stdin.drain()
    stderr_task = asyncio.create_task(_tail(child.stderr))
    result = None
    try:
        async for line in child.stdout:
            message = json.loads(line) if line.startswith(b"{") else {}
            if "progress" in message and on_progress is not None:
                on_progress(message["progress"])
            result = message.get("result", result)
        code = await child.wait()
    except asyncio.CancelledError:
        child.kill()
        await child.wait()
        raise
    stderr = (await stderr_task).decode(errors="replace")
    if code != 0 or result is None:
        raise RuntimeError(f"training child exited with {code}: {stderr}")
    return result


async def _tail(stream: asyncio.StreamReader) -> bytes:
    """Read a stream as it comes to its end, keeping only its last STDERR_TAIL_BYTES (what an error shows)."""
    tail = b""
    while chunk := await stream.read(65536):
        tail = (tail + chunk)[-STDERR_TAIL_BYTES:]
    return tail


class TrainerService:
    """start()/stop() or `async with`; run() until stopped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = Registry(settings.registry_dir)
        self.state = TrainerState(settings.data_dir)
        self.store = Store(settings.store_path)
        self._producer = kafka.producer(settings)
        self._consumer = kafka.consumer(settings, topics.SAMPLES_STORED, topics.TRAINING_REQUESTS, group_id="trainer")
        self._lock = contextlib.ExitStack()
        self._runs: dict[str, asyncio.Task] = {}
        self._training_up_to: dict[str, int] = {}  # the store watermark each running run trains up to
        self._stopping = asyncio.Event()
        self._reported_missing: set[str] = set()  # families whose missing packages were logged and counted

    async def _take_over_when_free(self) -> None:
        """Hold the data dir's lifetime lock; while another trainer holds it, wait as its standby. The kernel frees
        the lock when that process dies (kill -9 too), and the trainer state on the disk says where it got to."""
        said = False
        while True:
            try:
                self._lock.enter_context(self.state.running())
            except TrainerBusy:
                if not said:
                    log.info("another trainer is active on %s: standing by", self.settings.data_dir)
                    said = True
                await asyncio.sleep(STANDBY_POLL_S)
                continue
            if said:
                log.info("the active trainer is gone: taking over")
            if self.state.runs_under_way():
                # Its training child notices its parent's death at once, but may be committing a version just now.
                log.info("waiting for the killed trainer's training run to exit")
                await asyncio.to_thread(self.state.wait_for_runs)
            return

    async def start(self) -> None:
        await self._take_over_when_free()
        await self.store.start()
        await self._producer.start()
        for family in FAMILIES:
            try:
                base = await asyncio.to_thread(ensure_base, self.settings, self.registry, family)  # takes the lock
            except MissingPackages:
                base = None  # the family's first run builds it; until then, schedule() reports what is missing
            if base is not None:
                log.info("%s: base model ready as version 0", family)
                await publish_model_updated(self._producer, self.settings,
                                            model_updated_event(base, decision="promoted", reason="base model"))
            await self._recover(family)
        await self._consumer.start()

    async def _recover(self, family: str) -> None:
        """What a killed trainer left: half-built versions (removed), committed, unannounced ones (finished) and a
        finished run's watermark not yet recorded."""
        with self.registry.writer_lock():
            if removed := self.registry.remove_staging(family):
                log.info("%s: removed %d half-built version(s) of killed runs", family, removed)
        for version in self.registry.unfinished(family):
            log.warning("%s: version %d was committed but its run never finished; finishing it now", family,
                        version.number)
            await finish_run(self.settings, self._producer, run_result(version))
        numbers = self.registry.numbers(family)
        newest = run_result(self.registry.get(family, numbers[-1])) if numbers else None
        if newest is not None and newest["watermark"] > self.state.last_trained_id(family):
            # Killed between the decision and the watermark: without this step the same samples train again.
            log.warning("%s: version %d was finished but its watermark not recorded; recording it now", family,
                        newest["version"])
            self.state.record_run(newest, registry_dir=self.settings.registry_dir)

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._runs.values():
            task.cancel()
        await asyncio.gather(*self._runs.values(), return_exceptions=True)
        await self._consumer.stop()
        await self._producer.stop()
        await self.store.stop()
        self._lock.close()

    async def __aenter__(self) -> "TrainerService":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self) -> None:
        for family in FAMILIES:  # samples may have arrived while no trainer was running
            await self._maybe_train(family)
        while not self._stopping.is_set():
            try:
                batch = await self._consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        await self._on_message(record)
                if batch:
                    await self._consumer.commit()
            except ConsumerStoppedError:
                return  # stop() was called while waiting for records
            except KafkaError as exc:
                if is_fatal(exc):  # refused, not away: retrying would only repeat the refusal
                    raise stopped("trainer", exc) from None
                # The broker is away: these records only trigger counting, which the next one repeats.
                log.warning("trainer: %s; retrying in %ds", type(exc).__name__, BROKER_RETRY_S)
                await asyncio.sleep(BROKER_RETRY_S)

    async def _on_message(self, record: ConsumerRecord) -> None:
        topic = record.topic.removeprefix(self.settings.topic_prefix)
        try:
            message = parse_internal(topic, record.value or b"")
        except InvalidEvent as error:
            refuse(topic, record.partition, record.offset, error)
            return
        family = message["family"]
        if topic == topics.TRAINING_REQUESTS:
            self._queue_request(family, message)
        if isinstance(message.get("erased_from"), int):
            self._on_erasure(family, message["erased_from"])
        await self._maybe_train(family)

    def _on_erasure(self, family: str, erased_from: int) -> None:
        """Stored samples from id `erased_from` on were erased: if a model trained, or is training, on any of them,
        a from-scratch run is due (counted durably, so a restart or a failed run still does it)."""
        seen = max(self.state.last_trained_id(family), self._training_up_to.get(family, 0))
        if erased_from <= seen:
            log.info("%s: an erasure removed samples a model trained on; a from-scratch run is due", family)
            self.state.erasure_seen(family)

    def _queue_request(self, family: str, message: dict[str, Any]) -> None:
        """Durably, before the loop commits the request's offset; the run that serves it is _maybe_train's."""
        kind = "from-scratch" if message.get("from_scratch") else "incremental"
        if not self.state.request(family, event_id=str(message.get("event_id")),
                                  from_scratch=bool(message.get("from_scratch"))):
            log.info("%s: a %s training request already queued was delivered again", family, kind)
        elif family in self._runs:
            log.info("%s: a run is in progress; the %s training request waits for it", family, kind)

    async def _maybe_train(self, family: str) -> None:
        """Start the run that is due, if any: queued requests first (from scratch when one of them, or an erasure,
        asks for it), then a from-scratch run after an erasure, then an incremental one at the threshold."""
        if family in self._runs:
            return
        requests, from_scratch_requested = self.state.requests_pending(family)
        after_erasure = self.settings.retrain_after_erasure and self.state.erasures_pending(family) > 0
        if requests:
            self.schedule(family, from_scratch=from_scratch_requested or after_erasure, requests=requests,
                          why="requested")
        elif after_erasure:
            self.schedule(family, from_scratch=True, why="after an erasure")
        elif self.settings.auto_train and (await self.store.count(family, after=self.state.last_trained_id(family))
                                           >= self.settings.threshold(family)):
            self.schedule(family, from_scratch=False, why="threshold reached")

    def schedule(self, family: str, *, from_scratch: bool, why: str, requests: int = 0) -> None:
        """Start a run now (the caller checked that none is running). requests: the newest queued request it serves."""
        # Asked each time (a lookup, no import): packages installed meanwhile are used by the next run's child.
        if (reason := TRAINING[family].unavailable()) is not None:
            self._report_missing(family, reason)
            return
        kind = "from scratch" if from_scratch else "incremental"
        log.info("%s: Training scheduled in background (%s, %s)", family, why, kind)
        self._runs[family] = asyncio.create_task(self._run(family, from_scratch=from_scratch, requests=requests))

    def _report_missing(self, family: str, reason: str) -> None:
        """Once per family: every new sample would repeat it, and nothing changes until the packages come."""
        if family in self._reported_missing:
            return
        self._reported_missing.add(family)
        TRAINING_FAILURES.labels(family=family, reason="missing_dependency").inc()
        log.error("%s: cannot train, the samples wait in the store: %s", family, reason)

    async def _run(self, family: str, *, from_scratch: bool, requests: int) -> None:
        try:
            await self._recover(family)  # a run whose announcement failed (say, the broker was down) goes first
            up_to = self._training_up_to[family] = await self.store.watermark(family)
            after = self.state.last_trained_id(family)
            erasures = self.state.erasures_total(family)  # what a from-scratch run on today's store covers

            def progress(step: dict[str, Any]) -> None:
                if step.get("steps"):
                    TRAINING_PROGRESS.labels(family=family).set(step["step"] / step["steps"])

            result = await run_child(self.settings, family, after=after, up_to=up_to, from_scratch=from_scratch,
                                     requests=requests, on_progress=progress)
            await finish_run(self.settings, self._producer, result)
            if from_scratch:
                self.state.retrained_after(family, erasures)
            log.info("%s: run finished: version %d %s (%s)", family, result["version"], result["decision"],
                     result["reason"])
        except asyncio.CancelledError:
            raise
        except Exception:
            TRAINING_FAILURES.labels(family=family, reason="error").inc()
            log.exception("%s: training run failed; the samples stay pending and are retried%s", family,
                          "; the requests it served are not (ask again)" if requests else "")
            self.state.requests_served(family, requests)  # a request that fails each time must not loop
            await asyncio.sleep(RETRY_AFTER_FAILURE_S)  # no hot loop on a persistent failure
        finally:
            self._runs.pop(family, None)
            self._training_up_to.pop(family, None)
        await self._maybe_train(family)  # samples that arrived during the run, or a retry after a failure
