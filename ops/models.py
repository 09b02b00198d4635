"""`learnstream models list|rollback`."""

from __future__ import annotations

import asyncio
import json
import sys

import orjson

from learnstream import kafka, topics
from learnstream.config import FAMILIES, Settings
from learnstream.registry import Registry, RegistryError, rollback


def list_models(settings: Settings, family: str | None) -> int:
    registry = Registry(settings.registry_dir)
    for fam in [family] if family else FAMILIES:
        served = registry.served(fam)
        for version in registry.versions(fam):
            m = version.manifest
            print(json.dumps({
                "family": fam, "version": version.number, "served": version.number == served,
                "decision": m.get("decision"), "reason": m.get("reason"), "parent_version": m.get("parent_version"),
                "samples": m.get("samples"), "watermark": m.get("watermark"), "created_at": m.get("created_at"),
                "metrics": {k: v for k, v in m.get("metrics", {}).items() if isinstance(v, (int, float))},
            }))
    return 0


def rollback_model(settings: Settings, family: str, number: int) -> int:
    """Serve an existing version again; every replica swaps on the model.updated this publishes."""
    registry = Registry(settings.registry_dir)
    try:
        with registry.writer_lock(wait=True):
            event = rollback(registry, family, number)
    except RegistryError as exc:
        print(f"learnstream: {exc}", file=sys.stderr)
        return 1

    async def publish() -> None:
        producer = kafka.producer(settings)
        try:
            await producer.start()
            await producer.send_and_wait(topics.prefixed(settings, topics.MODEL_UPDATED), orjson.dumps(event),
                                         key=family.encode())
        finally:
            await producer.stop()

    asyncio.run(publish())
    print(f"{family}: serving version {number}")
    return 0
