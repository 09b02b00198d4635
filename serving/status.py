"""GET /api/ai/training-status: the seed's fields (for chat) plus a block per family.

Read from the durable sources, never from a process's memory: the store (samples, consent skips, DLQ index,
erasures), the registry (versions, decisions, served pointer) and the trainer's state and training_metrics.json.
"""

from __future__ import annotations

from typing import Any

from learnstream import lineage
from learnstream.config import FAMILIES, Settings
from learnstream.registry import Registry, RegistryError
from learnstream.store import Store
from learnstream.training_state import TrainerState, training_metrics

RECENT_RUNS = 5


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
    marks = await lineage.family_marks(registry, store, family)
    served = registry.served(family)
    return {
        "samples_stored": await store.count(family),
        "samples_since_last_run": await store.count(family, after=last_trained),
        "threshold": settings.threshold(family),
        "auto_train": settings.auto_train,
        "served_version": served,
        # Set when the served version holds erased data (serving keeps it until a clean version is promoted,
        # or an operator's --allow-erased rollback chose it: then the override's reason).
        "served_version_erased": marks.get(served),
        "served_version_override": lineage.override(registry.history(family), served) if served in marks else None,
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
             "created_at": v.manifest.get("created_at"), "metrics": v.manifest.get("metrics", {}),
             "erased": marks.get(v.number)}
            for v in versions
        ],
        "promotion_history": registry.history(family),
        "erased_in_versions": sorted(marks),  # the versions holding erased data; each one's reason in "versions"
        # An erasure removed samples a model trained on, and the from-scratch run that follows has not finished yet.
        "erasure_retrain_pending": TrainerState(settings.data_dir).erasures_pending(family) > 0,
        "report": (latest.manifest.get("metrics", {}).get("report") if latest else None),
    }


async def training_status(settings: Settings, store: Store, registry: Registry, *, degraded: list[str],
                          answering: dict[str, int | None] | None = None) -> dict[str, Any]:
    """answering: from a serving replica, the version each family's model there answers with (None: no model yet);
    each family's "answering_version" says it beside served_version, the registry's pointer it follows."""
    families = {f: await family_status(settings, store, registry, f) for f in FAMILIES}
    for family, version in (answering or {}).items():
        families[family]["answering_version"] = version
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
