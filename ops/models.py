"""`learnstream models list|rollback`."""

from __future__ import annotations

import asyncio
import json
import sys

import orjson

from learnstream import kafka, lineage, topics
from learnstream.config import FAMILIES, Settings
from learnstream.registry import ErasedVersion, Registry, RegistryError, rollback
from learnstream.store import Store


async def _marks(settings: Settings, registry: Registry, families: list[str]) -> dict[str, dict[int, str]]:
    async with Store(settings.store_path) as store:
        return {family: await lineage.family_marks(registry, store, family) for family in families}


def list_models(settings: Settings, family: str | None) -> int:
    registry = Registry(settings.registry_dir)
    families = [family] if family else list(FAMILIES)
    marks = asyncio.run(_marks(settings, registry, families))
    for fam in families:
        served = registry.served(fam)
        for version in registry.versions(fam):
            m = version.manifest
            print(json.dumps({
                "family": fam, "version": version.number, "served": version.number == served,
                "decision": m.get("decision"), "reason": m.get("reason"), "parent_version": m.get("parent_version"),
                "samples": m.get("samples"), "watermark": m.get("watermark"), "created_at": m.get("created_at"),
                "metrics": {k: v for k, v in m.get("metrics", {}).items() if isinstance(v, (int, float))},
                "erased": marks[fam].get(version.number),  # why it holds erased data; null when it does not
            }))
    return 0


def rollback_model(settings: Settings, family: str, number: int, *, allow_erased: str | None = None) -> int:
    """Serve an existing version again; every replica swaps on the model.updated this publishes. A version that
    holds erased data is refused (exit 1) unless allow_erased gives a reason (kept in the promotion history)."""
    registry = Registry(settings.registry_dir)
    override = None if allow_erased is None else lineage.override_reason(allow_erased, key=settings.key_bytes())
    try:
        with registry.writer_lock(wait=True):
            erased = asyncio.run(_marks(settings, registry, [family]))[family].get(number)
            event = rollback(registry, family, number, erased=erased, allow_erased=override)
    except (RegistryError, ErasedVersion) as exc:
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
