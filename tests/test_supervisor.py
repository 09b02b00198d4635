"""Background loops are supervised: one that fails is restarted with backoff and counted, /healthz of a process
without serving names it while it is down, and a restarted stage goes on from its committed offsets (nothing
skipped, nothing doubled); a failure no retry mends ends the loop for good."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from prometheus_client import REGISTRY

from consumers.store_writer import StoreWriterService
from learnstream.config import Settings
from learnstream.supervisor import Supervisor
from learnstream.transient import StageStopped
from ops.broker import free_port
from serving.app import metrics_app, run_http
from tests.test_faults import Stream, assert_exactly_once, produce, wait_drained
from tests.test_pipeline import stored_at_least, wait_for


def _restarts(task: str) -> float:
    return REGISTRY.get_sample_value("learnstream_background_restarts_total", {"task": task}) or 0.0


async def test_a_failing_loop_is_restarted_and_counted_and_a_fatal_one_ends(monkeypatch):
    monkeypatch.setattr("learnstream.supervisor.RESTART_BACKOFF_S", (0.01, 0.02))
    runs, before = [], _restarts("flaky")

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("a bug")

    async def refused() -> None:
        raise StageStopped("stage stopped: refused")

    supervisor = Supervisor()
    supervisor.start("flaky", flaky)
    await asyncio.wait_for(supervisor.wait(), 5)  # returns once the loop ran to its end
    assert len(runs) == 3 and _restarts("flaky") == before + 2
    assert supervisor.health()["flaky"] == {"state": "stopped", "restarts": 2}
    supervisor.start("refused", refused)
    with pytest.raises(StageStopped):
        await asyncio.wait_for(supervisor.wait(), 5)
    assert supervisor.down() == ["refused"] and _restarts("refused") == 0
    await supervisor.stop()


@pytest.mark.kafka
async def test_a_stage_that_fails_is_restarted_from_its_committed_offsets_and_health_names_it(
        make_settings, start_pipeline, monkeypatch):
    monkeypatch.setattr("learnstream.supervisor.RESTART_BACKOFF_S", (2.0, 2.0))
    settings = make_settings(ner_model="")
    await start_pipeline(settings, roles=("anonymizer",))
    stream = Stream.make(300, tag="restarted")
    fail_next, failed = asyncio.Event(), asyncio.Event()

    class BuggyStoreWriter(StoreWriterService):
        """Once told to, its next batch hits a bug, once: the loop has fetched past it, and committed before it."""

        async def persist(self, decoded) -> None:
            if fail_next.is_set() and not failed.is_set():
                failed.set()
                raise RuntimeError("a bug")
            await super().persist(decoded)

    supervisor = Supervisor()
    runner = await run_http(metrics_app(supervisor), host="127.0.0.1", port=(port := free_port()))
    writer = BuggyStoreWriter(settings)
    await writer.start()
    try:
        supervisor.start("store", writer.run)
        async with aiohttp.ClientSession() as http:
            async def health() -> tuple[int, dict]:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                    return response.status, await response.json()

            assert await health() == (200, {"alive": True, "down": [], "tasks": {
                "store": {"state": "running", "restarts": 0}}})
            await produce(settings, stream.records()[:150], per_second=None)
            await wait_for(lambda: stored_at_least(settings, 1))
            fail_next.set()
            await produce(settings, stream.records()[150:200], per_second=None)
            await asyncio.wait_for(failed.wait(), 60)
            await asyncio.sleep(0.2)
            status, body = await health()
            assert (status, body["down"], body["tasks"]["store"]["state"]) == (503, ["store"], "restarting")
            await produce(settings, stream.records()[200:], per_second=None)
            await wait_drained(settings, stream, processes=[])
            status, body = await health()
            assert status == 200 and body["tasks"]["store"] == {"state": "running", "restarts": 1}
    finally:
        await writer.stop()
        await supervisor.stop()
        await runner.cleanup()
    await assert_exactly_once(settings, stream)


async def test_a_running_loop_stalled_on_a_transient_failure_is_waiting_and_down():
    stalled_on: list[str] = ["sqlite: OperationalError"]
    release = asyncio.Event()
    supervisor = Supervisor()
    supervisor.start("store", release.wait, waiting=lambda: stalled_on[0] if stalled_on else None)
    await asyncio.sleep(0)
    assert supervisor.health() == {"store": {"state": "waiting", "restarts": 0,
                                             "waiting_on": "sqlite: OperationalError"}}
    assert supervisor.down() == ["store"]
    stalled_on.clear()
    assert supervisor.health()["store"]["state"] == "running" and supervisor.down() == []
    release.set()
    await supervisor.stop()
