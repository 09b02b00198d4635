"""`learnstream status [--json]`: the training status, for people or as /api/ai/training-status prints it.

Its "degraded" list says which families cannot train here for want of the ml extra: status reads this host's
store, so it runs where the trainer runs, from the same installation.
"""

from __future__ import annotations

import asyncio
import json

from learnstream.config import FAMILIES, Settings
from learnstream.extras import TRAINING
from learnstream.registry import Registry
from learnstream.store import Store
from serving.status import training_status


async def _status(settings: Settings) -> dict:
    async with Store(settings.store_path) as store:
        degraded = [reason for family in FAMILIES if (reason := TRAINING[family].unavailable()) is not None]
        return await training_status(settings, store, Registry(settings.registry_dir), degraded=degraded)


def print_status(settings: Settings, *, as_json: bool) -> int:
    status = asyncio.run(_status(settings))
    if as_json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"trained: {'yes' if status['trained'] else 'not yet'} · runs: {status['total_runs']}")
    for family, f in status["families"].items():
        served = "none" if f["served_version"] is None else f"v{f['served_version']}"
        print(f"\n{family}: serving {served} · {f['samples_stored']} samples stored, "
              f"{f['samples_since_last_run']}/{f['threshold']} toward the next run"
              f"{'' if f['auto_train'] else ' (AUTO_TRAIN off)'}")
        print(f"  skipped (no consent): {f['skipped_no_consent']} · DLQ: {f['dlq']}"
              + (f" {f['dlq_by_reason']}" if f["dlq"] else ""))
        for run in f["recent_runs"]:
            loss = "" if run.get("loss") is None else f", loss {run['loss']:.4f}"
            print(f"  v{run['version']} {run['decision']}: {run['samples']} samples{loss}, "
                  f"{run.get('time_s') or 0:.1f}s ({run['finished_at']})")
        for version in f["versions"]:
            if version["erased"]:
                print(f"  v{version['version']} holds erased data: {version['erased']}")
        if f["served_version_erased"]:
            why = (f"served by an --allow-erased rollback: {f['served_version_override']}" if f["served_version_override"]
                   else "kept until a version without it is promoted (`learnstream train --family "
                        f"{family} --from-scratch`)")
            print(f"  the served version holds erased data; {why}")
    if status["degraded"]:
        print("\ndegraded:")
        for problem in status["degraded"]:
            print(f"  {problem}")
    return 0
