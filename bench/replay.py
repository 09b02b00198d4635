"""Bench: `learnstream replay` (rebuild the store from the *.anon topics, then swap it in) against bare aiokafka
consumption of the same topics, in one run.

    .venv/bin/python bench/replay.py [--samples 30000]

The topics are filled before any clock starts: sealed chat and image samples (made without NER: only the replay
is timed), consent skips, and erasure ledger entries for some owners. Both sides read every *.anon and DLQ topic
from the beginning, startup included. Goal: replay >= 0.5 x bare consumption. rebuild_vs_bare, no goal, rates the
rebuild phase alone (replay's own timing of it) against the same baseline: each sample written once, before the
swap. The bench starts its own local broker in a temporary folder unless KAFKA_BOOTSTRAP_SERVERS names one. The last
line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ingest import chat_events, local_broker, produce  # noqa: E402
from consumers.privacy import Anonymizer  # noqa: E402
from consumers.replay import replay  # noqa: E402
from consumers.store_writer import DLQ_TOPICS  # noqa: E402
from learnstream import kafka, topics  # noqa: E402
from learnstream.config import FAMILIES, Settings, load_settings  # noqa: E402
from learnstream.keystore import KeyStore  # noqa: E402
from learnstream.store import Store  # noqa: E402

IMAGE_SHARE = 10  # one image event for every ten chat events
ERASED_OWNERS = 3


def image_events(count: int) -> list[bytes]:
    return [orjson.dumps({"schema": "image.v1", "event_id": f"img-{n}", "ts": "2026-11-01T10:00:00Z",
                          "user_id": f"u{n % 97}", "image_id": f"img-{n}", "caption": "a walk by the sea",
                          "tags": ["beach", "sunset"], "embedding": [0.01 * (n % 7)] * 32,
                          "consent": {"training": n % 9 != 0}}) for n in range(count)]


def erasures() -> list[bytes]:
    return [orjson.dumps({"schema": "erasure.v1", "event_id": f"erase-{n}", "ts": "2026-11-01T10:30:00Z",
                          "user_id": f"u{n}"}) for n in range(ERASED_OWNERS)]


async def fill(settings: Settings, samples: int) -> int:
    """Anonymize events as the anonymizer would and put its output on the *.anon topics; returns the records."""
    anonymizer = Anonymizer(key=settings.key_bytes(), ner_model=None, max_event_bytes=1 << 20,
                            keys=KeyStore(settings.keys_path))
    by_family: dict[str, list[dict]] = {family: [] for family in FAMILIES}
    for family, raws in (("chat", [value for _, value in chat_events(samples, tag="replay")]),
                         ("image", image_events(samples // IMAGE_SHARE))):
        by_family[family] += [outcome.record for outcome in anonymizer.process(family, raws)]
    for entry in anonymizer.process("erasure", erasures()):  # the ledger goes to every family's topic
        for family in FAMILIES:
            by_family[family].append(entry.record)
    for family, records in by_family.items():
        await produce(settings, topics.anon(family), [(b"k", orjson.dumps(record)) for record in records])
    return sum(len(records) for records in by_family.values())


async def bare_rate(settings: Settings, names: list[str]) -> tuple[int, float]:
    """Records per second of reading the topics as replay does (in batches), doing nothing with them."""
    started, count = time.perf_counter(), 0
    async for records in kafka.read_batches_to_end(settings, names):
        count += len(records)
    return count, count / (time.perf_counter() - started)


async def run(samples: int, work: Path, bootstrap: str) -> dict:
    base = load_settings(env={k: v for k, v in os.environ.items() if k.startswith("LEARNSTREAM_")})
    settings = dataclasses.replace(base, bootstrap_servers=bootstrap, dev=True, data_dir=work / "data",
                                   topic_prefix=f"bench{os.getpid()}.")
    await kafka.ensure_topics(settings)
    produced = await fill(settings, samples)
    names = [topics.anon(f) for f in FAMILIES] + list(DLQ_TOPICS)
    read, bare = await bare_rate(settings, names)
    started = time.perf_counter()
    result = await replay(settings)
    seconds = time.perf_counter() - started
    async with Store(settings.store_path) as store:
        stored = {family: await store.count(family) for family in FAMILIES}
        assert await store.content_hash() == result.content_sha256
    return {"records": produced, "read_bare": read, "read_replay": result.records, "stored": stored,
            "bare": bare, "replay": result.records / seconds, "replay_seconds": seconds,
            "rebuild_seconds": result.rebuild_seconds, "swap_seconds": result.swap_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=30000, help="chat events (plus a tenth as many images)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as folder, local_broker(Path(folder) / "broker") as bootstrap:
        results = asyncio.run(run(args.samples, Path(folder), bootstrap))
    ratios = {
        "replay_vs_bare": results["replay"] / results["bare"],
        # The rebuild alone (every record read, each sample written once, into the new file): no goal, it shows
        # how far the goal is even before the swap writes the samples a second time.
        "rebuild_vs_bare": results["read_replay"] / results["rebuild_seconds"] / results["bare"],
    }
    for name, value in {**results, **ratios}.items():
        print(f"{name:>15}: {value:,.2f}" if isinstance(value, float) else f"{name:>15}: {value}")
    print(json.dumps({**{k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()},
                      "ratios": {k: round(v, 3) for k, v in ratios.items()},
                      "goals_met": {"replay_vs_bare": ratios["replay_vs_bare"] >= 0.5}}))


if __name__ == "__main__":
    main()
