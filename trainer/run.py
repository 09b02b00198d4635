"""One training run, from stored samples to a registry version with its decision.

Runs in a child process of the trainer (`python -m trainer.run`), so serving and the consumers never wait on
training, and a crash mid-run leaves only a staging folder that the registry never shows. The parent publishes
model.updated from the JSON result this prints as its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import math
import os
import sys
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from learnstream import lineage
from learnstream.config import Settings
from learnstream.extras import TRAINING
from learnstream.keystore import KeyStore
from learnstream.registry import Registry, Version
from learnstream.secret import reveal
from learnstream.store import Store
from learnstream.training_state import TrainerState
from schemas import utc_now
from trainer.datasets import chat_dialogues, image_samples

log = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]


def ensure_base(settings: Settings, registry: Registry, family: str) -> Version | None:
    """Create version 0 (the base model) when the family has none. Returns it when created."""
    with registry.writer_lock():
        if registry.numbers(family):
            return None
        return _create_base(settings, registry, family)


def _create_base(settings: Settings, registry: Registry, family: str) -> Version:
    with registry.staging(family) as staged:
        if family == "chat":
            TRAINING[family].require()  # the base is built (or loaded) with the training code
            from trainer.base_model import build_embedded_base, load_causal_lm

            if settings.base_model:
                model, tokenizer = load_causal_lm(settings.base_model)
                model.save_pretrained(staged)
                tokenizer.save_pretrained(staged)
            else:
                build_embedded_base(staged)
        manifest = {
            "lineage": lineage.write(staged, {}),  # the base holds nobody's data
            "base_model": settings.base_model or ("embedded-gpt2" if family == "chat" else "empty"),
            "parent_version": None,
            "samples": 0,
            "watermark": 0,
            "from_scratch": True,
            "decision": "promoted",
            "reason": "base model",
            "metrics": {},
            "hyperparameters": {},
            "created_at": utc_now(),
        }
        version = registry.commit(family, staged, manifest)
    registry.set_served(family, 0)
    registry.record_decision(family, {"ts": utc_now(), "version": 0, "decision": "promoted", "reason": "base model"})
    return version


# Per family: the held-out metric a version is judged on, its parent's value on the same data, higher is better?
_GATE_METRICS = {"chat": ("eval_loss", "eval_loss_parent", False), "image": ("tag_f1", "tag_f1_parent", True)}


def gate(family: str, metrics: dict[str, Any], tolerance: float, *,
         promote_without_eval: bool = False) -> tuple[str, str]:
    """(decision, reason): promoted unless the new version is worse than its parent (the served version; version 0
    from scratch) on the same held-out data by more than `tolerance`, a fraction of the parent's value. A run
    without its own held-out score (too little data to hold any out, nothing to train on) is recorded but not
    promoted, unless `promote_without_eval`; the reason says which. A held-out score with no parent score on the
    same data (an image parent without a tagger) is promoted: the parent has nothing to lose to."""
    name, parent_name, higher_is_better = _GATE_METRICS[family]
    new, old = metrics.get(name), metrics.get(parent_name)
    if new is None:
        missing = f"no held-out comparison: {name} not measured (too little data to hold any out, or nothing to train on)"
        if promote_without_eval:
            return "promoted", f"{missing}; promoted anyway: promote_without_eval is on"
        return "rejected", f"{missing}; not promoted (promote_without_eval is off)"
    if not math.isfinite(new):
        return "rejected", f"held-out {name} is {new}"
    if old is None:
        return "promoted", f"held-out {name} {new:.4f}; the parent has no score to compare with"
    comparison = f"held-out {name} {new:.4f} vs parent {old:.4f}"
    if not math.isfinite(old):
        return "promoted", comparison
    worse = new < old * (1 - tolerance) if higher_is_better else new > old * (1 + tolerance)
    if worse:
        return "rejected", f"{comparison}: worse beyond the {tolerance:.0%} tolerance"
    return "promoted", comparison


@asynccontextmanager
async def _stored(settings: Settings) -> AsyncIterator[tuple[Store, KeyStore]]:
    with KeyStore(settings.keys_path, cache_size=settings.key_cache_size) as keys:
        async with Store(settings.store_path) as store:
            yield store, keys


def execute(settings: Settings, family: str, *, after: int, up_to: int, from_scratch: bool, requests: int = 0,
            progress: Progress | None = None) -> dict[str, Any]:
    """Train on samples (after, up_to] (plus replay) from the served version, or on all of them from version 0.
    requests: the number of the newest queued training request this run serves (0: none), kept in the manifest so
    that a trainer finishing the version after a crash marks them done."""
    registry = Registry(settings.registry_dir)
    ensure_base(settings, registry, family)
    parent_number = 0 if from_scratch else (registry.served(family) or 0)
    parent = registry.verify(family, parent_number)
    started = time.monotonic()
    with registry.staging(family) as staged:
        # read: every sample the run read ({"owner", "ts"} at least), whose data the weights may hold.
        if family == "chat":
            metrics, hparams, count, read = _train_chat(settings, parent, after=0 if from_scratch else after,
                                                        up_to=up_to, out_dir=staged, progress=progress)
        else:
            # From scratch, the image trainer still reads the served version, only to keep person ids stable.
            served = registry.verify(family, registry.served(family) or 0)
            metrics, hparams, count, read = _train_image(settings, served if from_scratch else parent,
                                                         after=0 if from_scratch else after, up_to=up_to,
                                                         out_dir=staged, progress=progress)
        decision, reason = gate(family, metrics, settings.promotion_tolerance,
                              promote_without_eval=settings.promote_without_eval)
        manifest = {
            "lineage": lineage.write(staged, lineage.owners_of(read)),
            "base_model": parent.manifest.get("base_model"),
            "parent_version": parent_number,
            "samples": count,  # the new stored samples the run read (its metrics count training_targets)
            "watermark": up_to,
            "previous_watermark": 0 if from_scratch else after,
            "from_scratch": from_scratch,
            "requests": requests,
            "hyperparameters": hparams,
            "metrics": {**metrics, "duration_s": round(time.monotonic() - started, 3)},
            "decision": decision,
            "reason": reason,
            "created_at": utc_now(),
        }
        with registry.writer_lock():
            version = registry.commit(family, staged, manifest)
    return run_result(version)


def run_result(version: Version) -> dict[str, Any]:
    """What the trainer announces for a committed version; rebuilt from the manifest alone, so a version whose
    trainer died before announcing it can be announced at the next start."""
    manifest = version.manifest
    return {
        "family": version.family,
        "version": version.number,
        "decision": manifest["decision"],
        "reason": manifest["reason"],
        "path": f"{version.family}/{version.number}",
        "manifest_sha256": version.manifest_sha256,
        "metrics": manifest.get("metrics", {}),
        "parent_version": manifest.get("parent_version"),
        "watermark": manifest.get("watermark", 0),
        "samples": manifest.get("samples", 0),
        "requests": manifest.get("requests", 0),
    }


def _train_chat(settings: Settings, parent: Version, *, after: int, up_to: int, out_dir: Path, progress):
    from trainer.base_model import EMBEDDED_LEARNING_RATE
    from trainer.chat_training import ChatHParams, replay_draw, train_chat

    recipe = {
        "learning_rate": settings.chat_learning_rate,
        "batch_size": settings.chat_batch_size,
        "epochs": settings.chat_epochs,
        "replay_share": settings.chat_replay_share,
    }
    if settings.base_model is None and recipe["learning_rate"] is None:
        recipe["learning_rate"] = EMBEDDED_LEARNING_RATE
    hparams = ChatHParams(**{name: value for name, value in recipe.items() if value is not None})

    async def read_dialogues():
        async with _stored(settings) as (store, keys):
            return await chat_dialogues(store, keys, after=after, up_to=up_to,
                                        draw=lambda pool, new: replay_draw(pool, new, hparams))

    new, replay_pool, read = asyncio.run(read_dialogues())
    metrics = train_chat(parent_dir=parent.path, out_dir=out_dir, new=new, replay_pool=replay_pool,
                         hparams=hparams, progress=progress)
    return metrics, dataclasses.asdict(hparams), sum(len(d) for d in new), read


def _train_image(settings: Settings, parent: Version, *, after: int, up_to: int, out_dir: Path, progress):
    from trainer.image_training import ImageHParams, train_image

    async def read_samples():
        async with _stored(settings) as (store, keys):
            return await store.samples("image", keys=keys, up_to=up_to)

    # All of them at once: the tagger, the people clusters and the search index are built over every image.
    records, new_ids = image_samples(asyncio.run(read_samples()), after=after)
    hparams = ImageHParams()
    # new_ids=None trains the tagger afresh on everything (from scratch, or the first run).
    metrics = train_image(parent_dir=parent.path if parent.number > 0 else None, out_dir=out_dir,
                          samples=records, new_ids=new_ids if after else None, hparams=hparams, progress=progress)
    return metrics, dataclasses.asdict(hparams), len(new_ids), records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.run")
    parser.add_argument("--settings-on-stdin", action="store_true", required=True,
                        help="read the parent's exact settings as one JSON line on stdin (never argv: secrets)")
    parser.add_argument("--family", required=True, choices=("chat", "image"))
    parser.add_argument("--after", type=int, required=True)
    parser.add_argument("--up-to", type=int, required=True)
    parser.add_argument("--from-scratch", action="store_true")
    parser.add_argument("--requests", type=int, default=0, help="the newest queued training request the run serves")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="exit when stdin closes: the trainer holds it open, so a killed trainer leaves no run "
                             "behind to commit a version nobody announces")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s trainer.run %(message)s")
    settings = settings_from_json(_read_line(sys.stdin.fileno()))
    if args.exit_with_parent:
        threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()

    def report(step: dict[str, Any]) -> None:
        # Progress lines on stdout let the parent update its metrics while the run goes on.
        print(json.dumps({"progress": step}), flush=True)

    with TrainerState(settings.data_dir).run_under_way():
        result = execute(settings, args.family, after=args.after, up_to=args.up_to, from_scratch=args.from_scratch,
                         requests=args.requests, progress=report)
    print(json.dumps({"result": result}), flush=True)
    return 0


def _read_line(fd: int) -> str:
    # Byte by byte from the raw descriptor: nothing after the line may sit in a buffer the stdin watcher misses.
    line = bytearray()
    while (byte := os.read(fd, 1)) and byte != b"\n":
        line += byte
    return line.decode()


def _exit_when_stdin_closes() -> None:
    # The raw descriptor, not sys.stdin: a thread blocked in the buffered reader would hold its lock at shutdown.
    while os.read(sys.stdin.fileno(), 4096):
        pass
    os._exit(1)  # at once, from this thread: the run has no one to report to


def settings_to_json(settings: Settings) -> str:
    """Paths are made absolute: the child process may run in another working directory."""
    return json.dumps({f.name: _plain(getattr(settings, f.name)) for f in dataclasses.fields(settings)})


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value.resolve())
    return reveal(value)


def settings_from_json(text: str) -> Settings:
    values = json.loads(text)
    values["data_dir"] = Path(values["data_dir"])
    return Settings(**values)


if __name__ == "__main__":
    sys.exit(main())
