"""The model registry and the promotion gate: a version appears whole or not at all; serving loads only verified
versions of its own registry; a worse version stays in the registry, rejected, unserved; rollback; the promotion
history. Last, on the real broker: the trainer killed mid-run leaves nothing visible and the next run succeeds."""

from __future__ import annotations

import asyncio
import json
import math
import os
from pathlib import Path

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError
from prometheus_client import REGISTRY

from learnstream import kafka, topics
from learnstream.config import Settings, load_settings
from learnstream.registry import (STAGING_PREFIX, Registry, RegistryError, Version, model_updated_event,
                                  rollback)
from learnstream.store import Batch, Store, sample_row
from learnstream.training_state import TrainerState
from ops.models import list_models
from serving.holders import ModelHolder
from serving.status import family_status
from serving.updates import ModelUpdates
from tests.procs import RoleProcess
from trainer.run import gate, run_result
from trainer.service import finish_run

WEIGHTS = "model.bin"


def commit(registry: Registry, family: str = "chat", *, decision: str = "promoted", watermark: int = 0) -> Version:
    """A version with one small weights file, as a run would commit it."""
    with registry.writer_lock(), registry.staging(family) as staged:
        (staged / WEIGHTS).write_bytes(os.urandom(64))
        (staged / "config").mkdir()
        (staged / "config" / "model.json").write_text("{}")
        return registry.commit(family, staged, {"decision": decision, "reason": f"{decision} in a test",
                                                "metrics": {}, "watermark": watermark, "samples": 3})


def registry_with_base(root: Path, family: str = "chat") -> Registry:
    registry = Registry(root)
    commit(registry, family)
    registry.set_served(family, 0)
    registry.record_decision(family, {"ts": "2026-11-01T00:00:00Z", "version": 0, "decision": "promoted",
                                      "reason": "base model"})
    return registry


class Producer:
    """Stands in for the trainer's Kafka producer: keeps what was published, or fails like a broker that is away."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.sent: list[dict] = []

    async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> None:
        if self.fail:
            raise KafkaConnectionError("the broker is away")
        self.sent.append(orjson.loads(value))


class LoadedModel:
    """What a holder serves in these tests: only which version it came from (holders keep a weak reference)."""

    def __init__(self, version: Version) -> None:
        self.number = version.number


def swaps(family: str, result: str) -> float:
    return REGISTRY.get_sample_value("learnstream_model_swaps_total", {"family": family, "result": result}) or 0.0


# ---- the promotion gate ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("family, metrics, decision", [
    ("chat", {"eval_loss": 2.00, "eval_loss_parent": 2.10}, "promoted"),  # better
    ("chat", {"eval_loss": 2.13, "eval_loss_parent": 2.10}, "promoted"),  # worse, within 2%
    ("chat", {"eval_loss": 2.30, "eval_loss_parent": 2.10}, "rejected"),  # worse beyond 2%
    ("chat", {"eval_loss": math.nan, "eval_loss_parent": 2.10}, "rejected"),  # diverged
    ("chat", {"eval_loss": None, "eval_loss_parent": None}, "rejected"),  # nothing held out: not served blind
    ("image", {"train_images": 0, "tag_f1": None, "tag_f1_parent": None}, "rejected"),  # nothing to train on
    ("image", {"tag_f1": 0.50, "tag_f1_parent": None}, "promoted"),  # scored; the parent has no tagger to lose to
    ("image", {"tag_f1": 0.80, "tag_f1_parent": 0.70}, "promoted"),
    ("image", {"tag_f1": 0.69, "tag_f1_parent": 0.70}, "promoted"),
    ("image", {"tag_f1": 0.60, "tag_f1_parent": 0.70}, "rejected"),
])
def test_the_gate_rejects_a_version_worse_than_its_parent_beyond_the_tolerance(family, metrics, decision):
    verdict, reason = gate(family, metrics, tolerance=0.02)
    assert verdict == decision
    assert reason  # the history and model.updated say why


@pytest.mark.parametrize("family, metrics", [
    ("chat", {"eval_loss": None, "eval_loss_parent": None}),
    ("image", {"train_images": 0, "tag_f1": None, "tag_f1_parent": None}),
])
def test_a_run_without_a_held_out_score_is_promoted_only_when_configured_and_says_why(family, metrics):
    held, held_reason = gate(family, metrics, tolerance=0.02)
    assert held == "rejected" and "no held-out comparison" in held_reason and "promote_without_eval" in held_reason
    promoted, reason = gate(family, metrics, tolerance=0.02, promote_without_eval=True)
    assert promoted == "promoted" and "no held-out comparison" in reason and "promote_without_eval is on" in reason


def test_a_run_on_a_single_conversation_is_recorded_but_not_promoted_and_says_why(make_settings):
    """The issue's case: a chat run on one conversation (nothing to hold out) was promoted blind."""
    from learnstream.pseudonym import pseudonym
    from trainer.run import execute

    settings = make_settings()
    owner = pseudonym(b"k" * 32, "user", "alone")
    samples = [{"schema": "chat.sample.v1", "event_id": f"e-{n}", "ts": "2026-12-07T09:00:00Z", "owner": owner,
                "session": "s-1", "role": "therapist" if n % 2 else "patient", "text": f"turn {n} about sleep"}
               for n in range(10)]

    async def store_them() -> int:
        async with Store(settings.store_path) as store:
            await store.write(Batch(samples=[sample_row(s, orjson.dumps(s)) for s in samples]))
            return await store.watermark("chat")

    result = execute(settings, "chat", after=0, up_to=asyncio.run(store_them()), from_scratch=False)
    assert result["decision"] == "rejected" and "no held-out comparison" in result["reason"]
    manifest = Registry(settings.registry_dir).get("chat", result["version"]).manifest
    assert manifest["metrics"]["eval_loss"] is None
    # One name per count: the stored samples the run read, and the therapist turns it trained on.
    assert (manifest["samples"], manifest["metrics"]["training_targets"]) == (10, 5)


def test_promote_without_eval_is_off_by_default_and_read_from_the_environment():
    assert load_settings(env={}).promote_without_eval is False
    assert load_settings(env={"LEARNSTREAM_PROMOTE_WITHOUT_EVAL": "1"}).promote_without_eval is True


async def test_a_rejected_version_stays_in_the_registry_unserved_and_model_updated_says_so(make_settings):
    settings = make_settings()
    registry = registry_with_base(settings.registry_dir)
    rejected = commit(registry, decision="rejected", watermark=7)
    producer = Producer()
    await finish_run(settings, producer, run_result(rejected))
    assert registry.served("chat") == 0
    assert rejected.number in registry.numbers("chat")
    [event] = producer.sent
    assert (event["version"], event["decision"], event["reason"]) == (1, "rejected", "rejected in a test")
    assert registry.history("chat")[-1] | {"ts": None} == {"ts": None, "version": 1, "decision": "rejected",
                                                          "reason": "rejected in a test"}
    assert TrainerState(settings.data_dir).last_trained_id("chat") == 7  # its samples are not trained again


async def test_the_watermark_waits_for_model_updated_and_an_unannounced_run_is_finished_later(make_settings):
    settings = make_settings()
    registry = registry_with_base(settings.registry_dir)
    version = commit(registry, watermark=5)
    with pytest.raises(KafkaConnectionError):
        await finish_run(settings, Producer(fail=True), run_result(version))
    assert TrainerState(settings.data_dir).last_trained_id("chat") == 0
    assert [v.number for v in registry.unfinished("chat")] == [1]
    producer = Producer()
    await finish_run(settings, producer, run_result(version))  # what the trainer does at its next start
    assert [e["version"] for e in producer.sent] == [1]
    assert registry.unfinished("chat") == [] and registry.served("chat") == 1
    assert TrainerState(settings.data_dir).last_trained_id("chat") == 5


def test_rollback_serves_an_older_version_and_the_history_says_who_and_why(tmp_path, capsys, make_settings):
    settings = make_settings()
    registry = registry_with_base(settings.registry_dir)
    commit(registry)
    registry.set_served("chat", 1)
    event = rollback(registry, "chat", 0)
    assert registry.served("chat") == 0
    assert (event["decision"], event["version"], event["path"]) == ("promoted", 0, "chat/0")
    assert registry.history("chat")[-1]["decision"] == "rollback"
    list_models(settings, "chat")
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(m["version"], m["served"], m["decision"]) for m in listed] == [(0, True, "promoted"), (1, False, "promoted")]
    with pytest.raises(RegistryError):
        rollback(registry, "chat", 9)


async def test_the_status_carries_the_promotion_history(make_settings):
    settings = make_settings()
    registry = registry_with_base(settings.registry_dir)
    await finish_run(settings, Producer(), run_result(commit(registry, decision="rejected")))
    async with Store(settings.store_path) as store:
        status = await family_status(settings, store, registry, "chat")
    assert [(h["version"], h["decision"]) for h in status["promotion_history"]] == [(0, "promoted"), (1, "rejected")]
    assert all(h["ts"] and h["reason"] for h in status["promotion_history"])


# ---- what serving accepts ---------------------------------------------------------------------------------------


def test_half_built_versions_are_never_visible_and_are_cleared(tmp_path):
    registry = registry_with_base(tmp_path)
    with pytest.raises(RuntimeError), registry.staging("chat") as staged:
        (staged / WEIGHTS).write_bytes(b"half")
        raise RuntimeError("the run died")
    (registry.family_dir("chat") / f"{STAGING_PREFIX}killed").mkdir()  # what kill -9 leaves
    assert registry.numbers("chat") == [0]
    assert registry.remove_staging("chat") == 1
    assert half_built(registry) == []


@pytest.mark.parametrize("damage", ["altered", "removed", "added"])
def test_verify_refuses_a_version_whose_files_differ_from_its_manifest(tmp_path, damage):
    registry = registry_with_base(tmp_path)
    path = registry.get("chat", 0).path
    if damage == "altered":
        (path / WEIGHTS).write_bytes(b"tampered")
    elif damage == "removed":
        (path / "config" / "model.json").unlink()
    else:
        (path / "pytorch_model.bin").write_bytes(b"a pickle that would run code")
    with pytest.raises(RegistryError):
        registry.verify("chat", 0)


async def test_hostile_model_updated_events_are_refused_and_the_old_model_keeps_serving(tmp_path, make_settings):
    settings = make_settings(data_dir=tmp_path / "replica")
    registry = registry_with_base(settings.registry_dir)
    good, tampered = commit(registry), commit(registry)
    (tmp_path / "outside" / "chat" / "7").mkdir(parents=True)
    (registry.root / "chat" / "8").symlink_to(tmp_path / "outside" / "chat" / "7")
    holder = ModelHolder("chat", registry, load=LoadedModel)
    updates = ModelUpdates(settings, {"chat": holder})
    try:
        assert await holder.load_served() and holder.version == 0
        valid = model_updated_event(good, decision="promoted", reason="test")
        (tampered.path / WEIGHTS).write_bytes(b"tampered after commit")
        hostile = [
            {**valid, "path": "../outside/chat/7", "version": 7},
            {**valid, "path": str(tmp_path / "outside" / "chat" / "7"), "version": 7},
            {**valid, "path": "chat/8", "version": 8},  # a symlink out of the registry
            {**valid, "path": "image/1"},  # another family's folder
            {**valid, "path": "chat/2"},  # path and version disagree
            {**valid, "manifest_sha256": "0" * 64},
            model_updated_event(tampered, decision="promoted", reason="test"),
            {**valid, "path": "chat/\u00b2", "version": 2},  # passes isdigit(), fails int()
            {**valid, "version": "1"},
        ]
        before = swaps("chat", "failed") + swaps("chat", "rejected") + swaps("unknown", "rejected")
        for event in hostile:
            assert not await updates.apply(orjson.dumps(event)), event["path"]
        too_big = orjson.dumps(valid).replace(b'"version":%d' % good.number, b'"version":%d' % 2**70)
        raw_hostile = [b"\xff not json", b"null", b"[]", b'"chat/1"', b"{}", too_big]
        for raw in raw_hostile:
            assert not await updates.apply(raw), raw
        after = swaps("chat", "failed") + swaps("chat", "rejected") + swaps("unknown", "rejected")
        assert after - before == len(hostile) + len(raw_hostile)  # every refusal counted
        assert holder.current.model.number == 0
        assert await updates.apply(orjson.dumps(valid)) and holder.version == good.number  # a good one still swaps
    finally:
        await updates.stop()


# ---- the trainer killed mid-run (real broker, child processes) -------------------------------------------------


def chat_samples(count: int) -> list[dict]:
    """Stored chat samples in two conversations, so one can be held out."""
    return [{"schema": "chat.sample.v1", "event_id": f"e{n}", "ts": f"2026-11-01T10:00:{n:02d}Z", "owner": "u_1",
             "session": f"s_{n % 2}", "role": "patient" if n % 4 < 2 else "therapist",
             "text": f"turn {n}: I slept badly again and felt tense all day"} for n in range(count)]


def half_built(registry: Registry, family: str = "chat") -> list[str]:
    return [p.name for p in registry.family_dir(family).iterdir() if p.name.startswith(STAGING_PREFIX)]


def training_children(settings: Settings) -> list[int]:
    """Pids of `python -m trainer.run` processes working on this test's data dir: its settings come on stdin, so
    the data dir is found among its open files (it holds the run lock there for the whole run)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace") if entry.name.isdigit() else ""
            if "trainer.run" in command and any(
                    os.readlink(fd).startswith(str(settings.data_dir)) for fd in (entry / "fd").iterdir()):
                found.append(int(entry.name))
        except OSError:  # the process ended, or one of its files closed, while being read
            continue
    return found


async def wait_until(predicate, *, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"{what} did not happen in {timeout:.0f}s"
        await asyncio.sleep(0.1)


@pytest.mark.kafka
async def test_the_trainer_killed_mid_run_leaves_nothing_visible_and_the_next_run_succeeds(make_settings, tmp_path):
    # A high tolerance: this is about the crash, not about whether four turns make a better model.
    settings = make_settings(chat_threshold=8, promotion_tolerance=10.0)
    await kafka.ensure_topics(settings)
    async with Store(settings.store_path) as store:
        await store.write(Batch(samples=[sample_row(s, orjson.dumps(s)) for s in chat_samples(8)]))
    registry = Registry(settings.registry_dir)
    trainer = RoleProcess(settings, "trainer", log_path=tmp_path / "trainer.log")
    holder = ModelHolder("chat", registry, load=LoadedModel)
    async with ModelUpdates(settings, {"chat": holder}) as updates:  # a serving replica
        listening = asyncio.create_task(updates.run())
        trainer.start()
        try:
            await wait_until(lambda: holder.version == 0, timeout=120, what="the base model being served")
            # A run is under way once its half-built version exists.
            await wait_until(lambda: half_built(registry), timeout=120, what="a training run")
            assert training_children(settings), "the run's child is not found: the exit check below would be empty"
            trainer.kill()
            await wait_until(lambda: not training_children(settings), timeout=10, what="the training child's exit")
            assert registry.numbers("chat") == [0] and registry.served("chat") == 0
            assert holder.version == 0
            trainer.start()
            await wait_until(lambda: holder.version == 1, timeout=150, what="version 1 being served")
        finally:
            trainer.stop()
            await updates.stop()
            await listening
    assert registry.history("chat")[-1]["version"] == 1
    assert half_built(registry) == []
    assert TrainerState(settings.data_dir).last_trained_id("chat") == 8
    announced = [orjson.loads(r.value) async for r in kafka.read_to_end(settings, [topics.MODEL_UPDATED])]
    # The base, then the one finished run: nothing from the killed one.
    assert [e["version"] for e in announced if e["family"] == "chat"] == [0, 1]
