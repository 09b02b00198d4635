"""GET /api/ai/training-status: the seed's fields (for chat) plus a block per family.

Read from the durable sources, never from a process's memory: the store (samples, consent skips, DLQ index,
erasures), the registry (versions, decisions, served pointer) and the trainer's state and training_metrics.json.
"""

from __future__ import annotations

from typing import Any

from learnstream.config import FAMILIES, Settings
from learnstream.registry import Registry, RegistryError, Version
from learnstream.store import Store
from learnstream.training_state import TrainerState, training_metrics
from schemas import utc_instant

RECENT_RUNS = 5


def erased_in_versions(versions: list[Version], erased: list[tuple[int, str]]) -> list[int]:
    """Versions whose weights carry an erased sample: trained on it (its id within the version's watermark and
    the version made before the erasure), or descended from such a version without a from-scratch retrain."""
    affected: dict[int, bool] = {}
    for version in sorted(versions, key=lambda v: v.number):
        manifest = version.manifest
        trained_on = any(
            sample_id <= manifest.get("watermark", 0) and utc_instant(manifest["created_at"]) < utc_instant(erased_at)
            for sample_id, erased_at in erased
        )
        parent = manifest.get("parent_version")
        inherited = not manifest.get("from_scratch") and affected.get(parent, False)
        affected[version.number] = trained_on or inherited
    return [n for n, hit in affected.items() if hit]


async def family_status(settings: Settings, store: Store, registry: Registry, family: str) -> dict[str, Any]:
    state = TrainerState(settings.data_dir).load().get(family, {})
    last_trained = state.get("last_trained_id", 0)
    try:
        versions = registry.versions(family)
    except RegistryError:
        versions = []
    runs = [r for r in training_metrics(settings.registry_dir)["runs"] if r["family"] == family]
    dlq = await store.dlq_by_reason(family)
    latest = next((v for v in reversed(versions) if v.number > 0), None)
    return {
        "samples_stored": await store.count(family),
        "samples_since_last_run": await store.count(family, after=last_trained),
        "threshold": settings.threshold(family),
        "auto_train": settings.auto_train,
        "served_version": registry.served(family),
        "last_trained_id": last_trained,
        "skipped_no_consent": await store.skipped_count(family, "no_consent"),
        # An erased person's events appended before their erasure and still in flight then: never stored.
        "skipped_erased": await store.skipped_count(family, "erased"),
        "dlq": sum(dlq.values()),
        "dlq_by_reason": dlq,
        "dlq_redriven": sum((await store.dlq_by_reason(family, redriven=True)).values()),
        "runs": len(runs),
        "last_run": state.get("last_run"),
        "recent_runs": runs[-RECENT_RUNS:],
        "versions": [
            {"version": v.number, "decision": v.manifest.get("decision"), "reason": v.manifest.get("reason"),
             "created_at": v.manifest.get("created_at"), "metrics": v.manifest.get("metrics", {})}
            for v in versions
        ],
        "promotion_history": registry.history(family),
        "erased_in_versions": erased_in_versions(versions, await store.erased_samples(family)),
        # An erasure removed samples a model trained on, and the from-scratch run that follows has not finished yet:
        # the served version is kept until it is promoted.
        "erasure_retrain_pending": TrainerState(settings.data_dir).erasures_pending(family) > 0,
        "report": (latest.manifest.get("metrics", {}).get("report") if latest else None),
    }


async def training_status(settings: Settings, store: Store, registry: Registry, *,
                          degraded: list[str]) -> dict[str, Any]:
    families = {f: await family_status(settings, store, registry, f) for f in FAMILIES}
    chat = families["chat"]
    return {
        # The seed app's fields, about the chat model.
        "trained": any(r["decision"] == "promoted" for r in chat["recent_runs"]) or (chat["served_version"] or 0) > 0,
        "total_runs": sum(f["runs"] for f in families.values()),
        "last_run": chat["last_run"],
        "last_trained_id": chat["last_trained_id"],
        "recent_runs": chat["recent_runs"],
        "families": families,
        "degraded": degraded,
    }
