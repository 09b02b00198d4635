"""The trainer's durable state: per-family watermark (last_trained_id), the queue of manual training requests and
the seed's training_metrics.json."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, TextIO

from schemas import utc_now

# Event ids of the latest requests kept per family: a request redelivered after a restart is recognised, not run twice.
RECENT_REQUEST_IDS = 64


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        json.dump(value, handle, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


class TrainerBusy(Exception):
    """A trainer is already running on this data dir."""


class TrainerState:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "trainer" / "state.json"

    @contextmanager
    def running(self) -> Iterator[None]:
        """Held by the one trainer of a data dir for its lifetime: a manual `learnstream train` that finds it
        taken hands its request to that trainer instead of writing the registry beside it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.parent / ".running.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise TrainerBusy("a trainer is running on this data dir") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def run_under_way(self) -> Iterator[None]:
        """Held (shared) by a training run's process for the whole run. A trainer taking over a data dir waits until
        no run holds it (`wait_for_runs`): a killed trainer's run, still alive for a moment, can then no longer commit a
        version beside the one the new trainer trains from the same samples."""
        with self._run_lock() as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def runs_under_way(self) -> bool:
        return not self._lock_runs(fcntl.LOCK_EX | fcntl.LOCK_NB)

    def wait_for_runs(self) -> None:
        """Block until no training run holds run_under_way (the kernel frees a killed run's hold)."""
        self._lock_runs(fcntl.LOCK_EX)

    def _lock_runs(self, operation: int) -> bool:
        with self._run_lock() as handle:
            try:
                fcntl.flock(handle, operation)
            except BlockingIOError:
                return False
            fcntl.flock(handle, fcntl.LOCK_UN)
            return True

    def _run_lock(self) -> TextIO:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return open(self.path.parent / ".run.lock", "a+")

    @contextmanager
    def _family_entry(self, family: str) -> Iterator[dict[str, Any]]:
        """The family's entry of the state, written back when the block ends (only the one trainer writes)."""
        state = self.load()
        yield state.setdefault(family, {"last_trained_id": 0, "runs": 0})
        _write_json(self.path, state)

    def load(self) -> dict[str, Any]:
        """{family: {"last_trained_id", "runs", "last_run", "erasures", "erasures_retrained", "requests",
        "from_scratch_requested", "requests_served", "request_ids"}}"""
        return _read_json(self.path, {})

    def erasures_pending(self, family: str) -> int:
        """How many erasures that removed samples a model may have seen no from-scratch run has started after."""
        entry = self.load().get(family, {})
        return entry.get("erasures", 0) - entry.get("erasures_retrained", 0)

    def erasure_seen(self, family: str) -> None:
        """Count one more such erasure: a from-scratch run is due."""
        with self._family_entry(family) as entry:
            entry["erasures"] = entry.get("erasures", 0) + 1

    def erasures_total(self, family: str) -> int:
        return self.load().get(family, {}).get("erasures", 0)

    def retrained_after(self, family: str, erasures: int) -> None:
        """A from-scratch run that started once `erasures` erasures were counted has finished: those are done."""
        with self._family_entry(family) as entry:
            entry["erasures_retrained"] = max(entry.get("erasures_retrained", 0), erasures)

    def request(self, family: str, *, event_id: str, from_scratch: bool) -> bool:
        """Queue a manual training request (numbered 1, 2, ...); False when this event id was queued already. The
        trainer calls it before committing the request's offset, so a request it took is never lost."""
        with self._family_entry(family) as entry:
            recent = entry.setdefault("request_ids", [])
            if event_id in recent:
                return False
            recent.append(event_id)
            del recent[:-RECENT_REQUEST_IDS]
            entry["requests"] = entry.get("requests", 0) + 1
            if from_scratch:
                entry["from_scratch_requested"] = entry["requests"]
        return True

    def requests_pending(self, family: str) -> tuple[int, bool]:
        """(the newest request's number, whether one waiting is from scratch); (0, False) when none waits. A run
        started for them serves all of them: a from-scratch one absorbs the incremental ones queued beside it."""
        entry = self.load().get(family, {})
        served = entry.get("requests_served", 0)
        if entry.get("requests", 0) <= served:
            return 0, False
        return entry["requests"], entry.get("from_scratch_requested", 0) > served

    def requests_served(self, family: str, up_to: int) -> None:
        """Requests numbered up to `up_to` are done (their run finished, or failed: the operator asks again)."""
        with self._family_entry(family) as entry:
            entry["requests_served"] = max(entry.get("requests_served", 0), up_to)

    def last_trained_id(self, family: str) -> int:
        return self.load().get(family, {}).get("last_trained_id", 0)

    def record_run(self, result: dict[str, Any], *, registry_dir: Path) -> None:
        """Advance the watermark (whatever the decision), mark the requests the run served as done, and append the
        run to training_metrics.json."""
        family = result["family"]
        with self._family_entry(family) as entry:
            entry["last_trained_id"] = max(entry["last_trained_id"], result["watermark"])
            entry["requests_served"] = max(entry.get("requests_served", 0), result.get("requests", 0))
            entry["runs"] += 1
            entry["last_run"] = utc_now()
        metrics_path = Path(registry_dir) / "training_metrics.json"
        history = _read_json(metrics_path, {"runs": []})
        history["runs"].append({
            "family": family,
            "version": result["version"],
            "decision": result["decision"],
            "samples": result["samples"],
            "loss": result["metrics"].get("eval_loss", result["metrics"].get("train_loss")),
            "time_s": result["metrics"].get("duration_s"),
            "model_path": result["path"],
            "finished_at": entry["last_run"],
        })
        history["total_runs"] = len(history["runs"])
        _write_json(metrics_path, history)


def training_metrics(registry_dir: Path) -> dict[str, Any]:
    """The seed's training_metrics.json: every run with samples, loss, time and model path."""
    return _read_json(Path(registry_dir) / "training_metrics.json", {"runs": [], "total_runs": 0})
