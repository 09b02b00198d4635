"""`learnstream train --family F [--from-scratch]`: a run now, threshold ignored.

When a trainer is running (`learnstream up`), the request is handed to it over training.requests: one writer
per registry. Otherwise the run happens here, with a progress bar, and is announced like any other. Without the
packages the family's training needs (the ml extra), it raises MissingPackages, which names them, before anything.
"""

from __future__ import annotations

import asyncio
import sys

import orjson
from tqdm import tqdm

from learnstream import kafka, topics
from learnstream.config import Settings
from learnstream.extras import TRAINING
from learnstream.store import Store
from learnstream.training_state import TrainerBusy, TrainerState
from schemas import new_event_id, utc_now
from trainer.run import execute
from trainer.service import finish_run


async def _hand_over(settings: Settings, family: str, *, from_scratch: bool) -> None:
    producer = kafka.producer(settings)
    try:
        await producer.start()
        request = {"schema": "training.request.v1", "event_id": new_event_id(), "ts": utc_now(),
                   "family": family, "from_scratch": from_scratch}
        await producer.send_and_wait(topics.prefixed(settings, topics.TRAINING_REQUESTS), orjson.dumps(request),
                                     key=family.encode())
    finally:
        await producer.stop()


async def _watermark(settings: Settings, family: str) -> int:
    async with Store(settings.store_path) as store:
        return await store.watermark(family)


async def _announce(settings: Settings, result: dict) -> None:
    producer = kafka.producer(settings)
    try:
        await producer.start()
        await finish_run(settings, producer, result)
    finally:
        await producer.stop()


def train_now(settings: Settings, family: str, *, from_scratch: bool) -> int:
    # Before any hand-over: a trainer sharing this data dir almost always runs from this installation too.
    TRAINING[family].require()
    state = TrainerState(settings.data_dir)
    try:
        with state.running():
            up_to = asyncio.run(_watermark(settings, family))
            bar = tqdm(desc=f"training {family}", unit=" steps", file=sys.stderr)

            def progress(step: dict) -> None:
                bar.total = step.get("steps") or bar.total
                bar.update(step.get("step", bar.n) - bar.n)
                if "loss" in step:
                    bar.set_postfix(loss=f"{step['loss']:.4f}")

            result = execute(settings, family, after=state.last_trained_id(family), up_to=up_to,
                             from_scratch=from_scratch, progress=progress)
            bar.close()
            asyncio.run(_announce(settings, result))
    except TrainerBusy:
        asyncio.run(_hand_over(settings, family, from_scratch=from_scratch))
        print(f"{family}: a trainer is running; the request was handed to it (watch `learnstream status`)")
        return 0
    print(f"{family}: version {result['version']} {result['decision']} ({result['reason']})")
    return 0
