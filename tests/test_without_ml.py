"""Without the ml extra (torch, transformers, tokenizers, scikit-learn, scipy) everything but training and the local
chat model runs, and those two say what is missing and how to install it; the samples wait in the store for it.

The CI venv has the extra, so these tests hide it from the processes they start, and from those processes'
children: a sitecustomize makes every import finder report its packages as not found, exactly as when they are not
installed (importlib's find_spec answers None, an import raises ModuleNotFoundError).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from learnstream import kafka, topics
from learnstream.config import Settings
from learnstream.registry import Registry
from learnstream.store import Store
from learnstream.training_state import TrainerState
from producers.sdk import EventProducer
from tests import procs
from tests.procs import REPO, RoleProcess, run_cli
from tests.remote_standin import RemoteStandin
from tests.test_pipeline import chat_event, stored_at_least, wait_for

HIDDEN = ("torch", "transformers", "tokenizers", "sklearn", "scipy")  # the ml extra, by import name
INSTALL = "pip install 'learnstream[ml]'"
CHAT_TRAINING = f"chat training needs torch, transformers, tokenizers, not installed here: {INSTALL}"
IMAGE_TRAINING = f"image training needs torch, scipy, scikit-learn, not installed here: {INSTALL}"
LOCAL_CHAT = f"the local chat model needs torch, transformers, not installed here: {INSTALL}"
# Training itself: the only modules that may need the extra to be imported.
# The modules that need the ml extra: training, and the local chat model's CPU layers (imported only when one loads).
ML_MODULES = {"trainer.base_model", "trainer.chat_training", "trainer.device", "trainer.image_training",
              "serving.cpu_layers"}
THRESHOLD = 3

HIDE_PACKAGES = '''
import sys

HIDDEN = {hidden!r}


class Hide:
    """Wraps an import finder: the hidden packages are never found; everything else is as the finder says."""

    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attribute):  # invalidate_caches, find_distributions
        return getattr(self.finder, attribute)


sys.meta_path[:] = [Hide(finder) for finder in sys.meta_path]
'''

IMPORT_EVERYTHING = """
import importlib, json, pkgutil
failed = {}
for package in ("learnstream", "schemas", "producers", "consumers", "serving", "ops", "trainer"):
    for module in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        try:
            importlib.import_module(module.name)
        except ImportError as exc:
            failed[module.name] = exc.name
print(json.dumps(failed))
"""


def hide(packages: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The processes tests.procs starts (run_cli, RoleProcess) run without these packages, until undo()."""
    folder = tmp_path / "hide_packages"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(HIDE_PACKAGES.format(hidden=set(packages)))
    with_them = procs.settings_env
    monkeypatch.setattr(procs, "settings_env",
                        lambda settings: {**with_them(settings), "PYTHONPATH": f"{folder}:{REPO}"})
    return monkeypatch


@pytest.fixture
def without_ml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    return hide(HIDDEN, tmp_path, monkeypatch)


def test_report_without_matplotlib_says_how_to_install_it(tmp_path, monkeypatch):
    hide(("matplotlib",), tmp_path, monkeypatch)
    with pytest.raises(subprocess.CalledProcessError) as report:
        run_cli(Settings(data_dir=tmp_path / "data", dev=True), "report")
    assert report.value.returncode == 1 and "pip install 'learnstream[report]'" in report.value.stderr


def test_every_module_but_training_imports_without_ml(without_ml):
    done = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING], cwd=REPO, env=procs.settings_env(Settings()),
                          capture_output=True, text=True, timeout=60, check=True)
    failed = json.loads(done.stdout)
    assert set(failed) == ML_MODULES  # these do fail: the extra really is hidden
    assert set(failed.values()) <= set(HIDDEN)


def test_the_cli_runs_without_ml_and_status_says_what_training_needs(without_ml, tmp_path):
    settings = Settings(data_dir=tmp_path / "data", dev=True)
    assert "models" in run_cli(settings, "--help").stdout
    assert run_cli(settings, "models", "list").returncode == 0
    assert json.loads(run_cli(settings, "status", "--json").stdout)["degraded"] == [CHAT_TRAINING, IMAGE_TRAINING]
    assert f"degraded:\n  {CHAT_TRAINING}\n  {IMAGE_TRAINING}\n" in run_cli(settings, "status").stdout
    with pytest.raises(subprocess.CalledProcessError) as demo:
        run_cli(settings, "demo")
    assert demo.value.returncode == 1 and CHAT_TRAINING in demo.value.stderr


@pytest.mark.kafka
async def test_without_ml_serving_answers_and_the_trainer_keeps_the_samples_for_later(without_ml, make_settings,
                                                                                     tmp_path):
    async with RemoteStandin() as remote:
        settings = make_settings(chat_threshold=THRESHOLD, ner_model="", remote_url=remote.base_url,
                                 remote_api_key=remote.api_key, remote_model=remote.model)
        up = RoleProcess(settings, "anonymizer,store,trainer,serving", log_path=tmp_path / "up.log")
        url = f"http://127.0.0.1:{settings.http_port}"
        up.start()
        try:
            async with aiohttp.ClientSession() as http:

                async def ready() -> dict | None:
                    assert up.alive, up.log_tail()
                    try:
                        async with http.get(f"{url}/readyz") as response:
                            return await response.json() if response.status == 200 else None
                    except aiohttp.ClientConnectionError:
                        return None

                readiness = await wait_for(ready, timeout=60)
                assert readiness["served"] == {"chat": None, "image": 0}  # image version 0 needs no ml extra
                assert f"chat: {LOCAL_CHAT}" in readiness["degraded"]

                async with http.post(f"{url}/api/chat", json={"session_id": "s-1", "message": "I feel tense"}) as r:
                    assert r.status == 200 and (await r.json())["backend"] == "remote"
                remote.behaviour.fail_status = 503
                async with http.post(f"{url}/api/chat", json={"session_id": "s-1", "message": "I feel tense"}) as r:
                    assert r.status == 503 and (await r.json())["reason"] == LOCAL_CHAT
                async with http.post(f"{url}/api/images/enhance", json={"caption": "a woman in a red dress"}) as r:
                    assert r.status == 200 and (await r.json())["model_version"] == 0

                # The threshold crossed; then more samples and a manual request, which must not repeat the error.
                async with EventProducer(settings) as events:
                    for conversation in ("s-0", "s-1"):
                        for n in range(THRESHOLD):  # roles alternate
                            await events.send(chat_event(n, session=conversation))
                        if conversation == "s-0":  # the threshold is crossed: the trainer says what it lacks
                            await wait_for(lambda: _logged(up, "chat: cannot train"), timeout=30)
                async with http.post(f"{url}/api/ai/trigger-training", json={"family": "chat"}) as r:
                    assert r.status == 202
                await wait_for(lambda: stored_at_least(settings, 2 * THRESHOLD), timeout=30)
                await wait_for(lambda: _trainer_caught_up(settings), timeout=30)
                async with http.get(f"{url}/metrics") as r:
                    metrics = await r.text()
            assert 'learnstream_training_failures_total{family="chat",reason="missing_dependency"} 1.0' in metrics

            status = run_cli(settings, "status").stdout
            assert f"{2 * THRESHOLD}/{THRESHOLD} toward the next run" in status and CHAT_TRAINING in status
            with pytest.raises(subprocess.CalledProcessError) as train:
                run_cli(settings, "train", "--family", "chat")
            assert train.value.returncode == 1 and CHAT_TRAINING in train.value.stderr
        finally:
            up.stop()
    assert up.process.returncode == 0, up.log_tail()
    log = up.log_path.read_text()
    assert log.count(f"chat: cannot train, the samples wait in the store: {CHAT_TRAINING}") == 1  # said once
    assert "Traceback" not in log
    assert TrainerState(settings.data_dir).last_trained_id("chat") == 0
    assert Registry(settings.registry_dir).numbers("chat") == []

    # With the extra back (installed, then the trainer restarted), the samples that waited are trained.
    without_ml.undo()
    trainer = RoleProcess(settings, "trainer", log_path=tmp_path / "trainer.log")
    trainer.start()
    try:
        async with Store(settings.store_path) as store:
            watermark = await store.watermark("chat")
        await wait_for(lambda: _trained_up_to(settings, watermark, trainer), timeout=150)
    finally:
        trainer.stop()


async def _trainer_caught_up(settings: Settings) -> bool:
    """Whether the trainer has handled (and committed) every record of the topics it follows."""
    partitions = await kafka.topic_partitions(settings, [topics.SAMPLES_STORED, topics.TRAINING_REQUESTS])
    reader = kafka.consumer(settings, group_id="trainer")
    await reader.start()
    try:
        ends = await reader.end_offsets(partitions)
        return all([await reader.committed(partition) == ends[partition] for partition in partitions])
    finally:
        await reader.stop()


async def _logged(role: RoleProcess, text: str) -> bool:
    return role.log_path.exists() and text in role.log_path.read_text()


async def _trained_up_to(settings: Settings, watermark: int, trainer: RoleProcess) -> bool:
    assert trainer.alive, trainer.log_tail()
    return TrainerState(settings.data_dir).last_trained_id("chat") == watermark
