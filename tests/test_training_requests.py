"""Manual training requests on the real broker: one that arrives during a run waits for it and then runs, a
from-scratch one absorbs the incremental ones queued beside it, and one queued when its trainer is killed -9 is
run once by the next trainer."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import orjson
import pytest

from learnstream import kafka, topics
from learnstream.config import Settings
from learnstream.registry import Registry
from learnstream.training_state import TrainerState
from schemas import new_event_id, utc_now
from tests.procs import RoleProcess
from tests.test_cluster import store_and_announce
from tests.test_registry import chat_samples, half_built, wait_until

pytestmark = pytest.mark.kafka

# A high tolerance: any run is promoted (this is about which runs happen).
RUN_SETTINGS = dict(chat_threshold=8, promotion_tolerance=10.0)
TIMEOUT_S = 150


async def request_training(settings: Settings, *, from_scratch: bool) -> None:
    """What `learnstream train` and POST /api/ai/trigger-training send when a trainer is running."""
    request = {"schema": "training.request.v1", "event_id": new_event_id(), "ts": utc_now(), "family": "chat",
               "from_scratch": from_scratch}
    async with kafka.producer(settings) as producer:
        await producer.send_and_wait(topics.prefixed(settings, topics.TRAINING_REQUESTS), orjson.dumps(request),
                                     key=b"chat")


def queued(settings: Settings) -> int:
    return TrainerState(settings.data_dir).load().get("chat", {}).get("requests", 0)


def training_child(trainer_pid: int) -> int | None:
    """The pid of the training child (trainer.run) under a trainer process, if there is one."""
    parents = [trainer_pid]
    while parents:
        for children in Path(f"/proc/{parents.pop()}/task").glob("*/children"):
            for pid in map(int, children.read_text().split()):
                if b"trainer.run" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return pid
                parents.append(pid)
    return None


async def queue_during_the_first_run(settings: Settings, *, from_scratch: list[bool], trainer_pid: int) -> int:
    """Cross the threshold, then, while that run is under way (its child paused so that it cannot end meanwhile),
    store more samples (what an incremental request trains on) and queue the requests. Returns the child's pid."""
    registry = Registry(settings.registry_dir)
    first, more = chat_samples(8), chat_samples(16)[8:]
    await store_and_announce(settings, first)
    await wait_until(lambda: training_child(trainer_pid), timeout=TIMEOUT_S, what="the threshold's run")
    child = training_child(trainer_pid)
    os.kill(child, signal.SIGSTOP)
    try:
        await store_and_announce(settings, more)
        for each in from_scratch:
            await request_training(settings, from_scratch=each)
        await wait_until(lambda: queued(settings) == len(from_scratch), timeout=TIMEOUT_S, what="the requests queued")
        assert registry.numbers("chat") == [0]
    finally:
        os.kill(child, signal.SIGCONT)
    return child


async def only_versions(settings: Settings, numbers: list[int]) -> dict[int, dict]:
    """Wait for exactly these versions; then a pause in which no other may come. Their manifests."""
    registry = Registry(settings.registry_dir)
    await wait_until(lambda: registry.numbers("chat") == numbers and TrainerState(settings.data_dir).requests_pending(
        "chat") == (0, False) and not half_built(registry), timeout=TIMEOUT_S, what=f"versions {numbers}")
    await asyncio.sleep(3)  # a second run for the same requests would have started by now
    assert registry.numbers("chat") == numbers and not half_built(registry)
    return {n: registry.get("chat", n).manifest for n in numbers}


async def test_a_request_during_a_run_is_run_after_it(make_settings, start_pipeline) -> None:
    settings = make_settings(**RUN_SETTINGS)
    await kafka.ensure_topics(settings)
    await start_pipeline(settings, roles=("trainer",))
    await queue_during_the_first_run(settings, from_scratch=[False], trainer_pid=os.getpid())
    manifests = await only_versions(settings, [0, 1, 2])
    assert manifests[1]["requests"] == 0 and manifests[2]["requests"] == 1
    assert manifests[1]["watermark"] == 8 and manifests[2]["watermark"] == 16
    assert manifests[2]["from_scratch"] is False and manifests[2]["parent_version"] == 1


async def test_a_from_scratch_request_queued_behind_incremental_ones_wins(make_settings, start_pipeline) -> None:
    settings = make_settings(**RUN_SETTINGS)
    await kafka.ensure_topics(settings)
    await start_pipeline(settings, roles=("trainer",))
    await queue_during_the_first_run(settings, from_scratch=[False, False, True],
                                     trainer_pid=os.getpid())
    manifests = await only_versions(settings, [0, 1, 2])  # one run for the three
    assert manifests[2]["requests"] == 3
    assert manifests[2]["from_scratch"] is True and manifests[2]["parent_version"] == 0


async def test_a_request_queued_when_its_trainer_is_killed_is_run_once_by_the_next(make_settings,
                                                                                   tmp_path: Path) -> None:
    settings = make_settings(**RUN_SETTINGS)
    await kafka.ensure_topics(settings)
    trainer = RoleProcess(settings, "trainer", log_path=tmp_path / "trainer.log")
    trainer.start()
    try:
        child = await queue_during_the_first_run(settings, from_scratch=[False], trainer_pid=trainer.process.pid)
        trainer.kill()  # mid-run, the request queued, perhaps before its offset was committed
        await wait_until(lambda: not Path(f"/proc/{child}").exists(), timeout=10, what="the training child's exit")
        trainer.start()
        # The next trainer's one run serves the request, and trains the samples the killed run was training on.
        manifests = await only_versions(settings, [0, 1])
    finally:
        trainer.stop()
    assert manifests[1]["requests"] == 1 and manifests[1]["watermark"] == 16
    assert TrainerState(settings.data_dir).load()["chat"]["requests"] == 1  # a redelivered request was recognised
