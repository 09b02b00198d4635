"""The training child reads the store a chunk at a time: with ten times the stored samples, the same run (the same
new conversations, the same replay drawn from a larger pool) peaks at much the same memory."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import orjson

from learnstream.config import Settings
from learnstream.registry import Registry
from learnstream.store import Batch, Store, sample_row
from trainer.run import settings_to_json

REPO = Path(__file__).resolve().parent.parent
OLDER_SAMPLES = 300  # the 1x store; the 10x one holds ten times as many older samples
NEW_SAMPLES = 16
TURNS_PER_CONVERSATION = 10
# Long older patient turns, so that holding every sample would show; short therapist turns (what is learned), so that
# the model's own working memory (logits at each learned token) stays small beside it.
PATIENT_CHARS, THERAPIST_CHARS = 160_000, 80


def sample(n: int, *, long: bool) -> dict:
    words = f"turn {n}: I slept badly again and felt tense all day, then talked it through. "
    patient = n % 2 == 0
    return {"schema": "chat.sample.v1", "event_id": f"e{n}", "ts": f"2026-11-01T10:00:00.{n:06d}Z",
            "owner": f"u_{n % 7}", "session": f"s_{n // TURNS_PER_CONVERSATION}",
            "role": "patient" if patient else "therapist",
            "text": (words * (PATIENT_CHARS // len(words))) if patient and long else words[:THERAPIST_CHARS]}


async def fill(settings: Settings, older: int) -> tuple[int, int]:
    """`older` samples, then NEW_SAMPLES newer ones; returns (the watermark after the older, after all)."""
    async with Store(settings.store_path) as store:
        for start in range(0, older, 1000):
            rows = [sample(n, long=True) for n in range(start, min(start + 1000, older))]
            await store.write(Batch(samples=[sample_row(s, orjson.dumps(s)) for s in rows]))
        after = await store.watermark("chat")
        rows = [sample(n, long=False) for n in range(older, older + NEW_SAMPLES)]
        await store.write(Batch(samples=[sample_row(s, orjson.dumps(s)) for s in rows]))
        return after, await store.watermark("chat")


def start_run(settings: Settings, *, after: int, up_to: int) -> subprocess.Popen:
    """The training child, as the trainer starts it."""
    child = subprocess.Popen(
        [sys.executable, "-m", "trainer.run", "--settings-on-stdin", "--family", "chat", "--after", str(after),
         "--up-to", str(up_to)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    child.stdin.write(settings_to_json(settings).encode() + b"\n")
    child.stdin.close()
    return child


def anonymous_kib(pid: int) -> int | None:
    """Its resident anonymous memory now; None once it has exited."""
    try:
        found = re.search(r"^RssAnon:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return None if found is None else int(found[1])  # a zombie has no memory left


def peak_memory(children: list[subprocess.Popen]) -> list[tuple[int, int]]:
    """Per child, (its peak anonymous memory, its peak resident set), KiB. The first, sampled from /proc while it
    runs, leaves out the pages of torch's shared libraries (most of the resident set of a process that imports
    it); the second (VmHWM) the kernel gives at its exit."""
    anonymous = [0] * len(children)
    running = set(range(len(children)))
    while running:
        for index in list(running):
            now = anonymous_kib(children[index].pid)
            if now is None:
                running.discard(index)
            else:
                anonymous[index] = max(anonymous[index], now)
        time.sleep(0.02)
    peaks = []
    for child, peak_anonymous in zip(children, anonymous):
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        assert child.returncode == 0
        peaks.append((peak_anonymous, usage.ru_maxrss))
    return peaks


def test_the_training_childs_peak_memory_hardly_grows_with_ten_times_the_samples(tmp_path: Path) -> None:
    from trainer.run import ensure_base  # the embedded base model needs torch: only this test pays for it

    scales, runs = (1, 10), []
    for scale in scales:
        settings = Settings(data_dir=tmp_path / f"x{scale}", dev=True, chat_epochs=1, promotion_tolerance=10.0)
        ensure_base(settings, Registry(settings.registry_dir), "chat")
        after, up_to = asyncio.run(fill(settings, OLDER_SAMPLES * scale))
        runs.append((settings, after, up_to))
    # Side by side (separate data dirs): what each holds is its own, and the test takes one child's time.
    (small, small_resident), (large, large_resident) = peak_memory(
        [start_run(settings, after=after, up_to=up_to) for settings, after, up_to in runs])
    print(f"training child peak memory, anonymous and resident: 1x {small / 1024:.0f} and "
          f"{small_resident / 1024:.0f} MiB, 10x {large / 1024:.0f} and {large_resident / 1024:.0f} MiB")
    assert large <= 1.5 * small and large_resident <= 1.5 * small_resident
    # Stricter, as torch alone is most of either figure: of the older samples the larger store adds, the child
    # holds at most a quarter's worth (holding them all takes more than their size).
    added_kib = (scales[1] - scales[0]) * OLDER_SAMPLES * PATIENT_CHARS / 2 / 1024
    assert large - small <= added_kib / 4, (large - small, added_kib)
