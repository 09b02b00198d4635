"""Crisis detection on the held-out test families of bench/safety_corpus.py (never trained or tuned on):
recall and false-positive rate per category for the rules alone, the classifier alone and the layers
together, and the latency each adds per message (p50, p99). The baseline is the rules alone, measured in the
same run on the same messages; a check-in counts as a flag.

Then each set written apart from the corpus (bench/data/safety_external*.jsonl, or the files given): recall
and false-positive rate of the rules alone (the baseline) and of the layers together, on the same messages.
A line of such a file is {"text", "crisis": bool} or {"text", "label": "crisis"|"ordinary", "kind"}.

    python bench/safety.py                        # the test split, then every external set
    python bench/safety.py --external FILE ...    # the test split, then these files
    python bench/safety.py --no-external          # the test split only (while tuning: externals are scored once)

Last line: JSON {"recall", "false_positive_rate", "recall_by_category", "p99_ms"} of the layers together on the
test split, and "external": {file name: {"recall", "false_positive_rate", "rules_recall", "rules_false_positive_rate",
"flagged_crisis", "flagged_ordinary", "crisis", "ordinary"}}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.safety_corpus import corpus  # noqa: E402
from serving import safety, safety_classifier  # noqa: E402

LAYERS = {"rules": ("rules",), "classifier": ("classifier",), "layers": ("rules", "classifier")}


def measure(rows: list[dict], layers: tuple[str, ...]) -> dict:
    classifier = safety_classifier.default()
    flagged, seconds = [], []
    for row in rows:
        started = time.perf_counter()
        flagged.append(safety.assess(row["text"], classifier=classifier, layers=layers).crisis)
        seconds.append(time.perf_counter() - started)
    flagged_arr, crisis = np.array(flagged), np.array([r["crisis"] for r in rows])
    by_category = {}
    for category in sorted({r["category"] for r in rows if r["crisis"]}):
        mask = np.array([r["crisis"] and r["category"] == category for r in rows])
        by_category[category] = round(float(flagged_arr[mask].mean()), 4)
    ms = np.array(seconds) * 1000
    return {"recall": round(float(flagged_arr[crisis].mean()), 4) if crisis.any() else None,
            "false_positive_rate": round(float(flagged_arr[~crisis].mean()), 4) if (~crisis).any() else None,
            "recall_by_category": by_category, "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3)}


EXTERNAL_SETS = sorted((Path(__file__).parent / "data").glob("safety_external*.jsonl"))


def read_external(path: Path) -> list[dict]:
    """The rows of one external set as {"text", "crisis", "category"}; ValueError with a one-line reason."""
    try:
        lines = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not isinstance(line, dict) or not isinstance(line.get("text"), str):
            raise ValueError(f"{path}:{number}: every line must be a JSON object with a \"text\" string")
        crisis = line.get("crisis", {"crisis": True, "ordinary": False}.get(line.get("label")))
        if not isinstance(crisis, bool):
            raise ValueError(f"{path}:{number}: needs \"crisis\": bool or \"label\": \"crisis\"|\"ordinary\"")
        kind = line.get("kind")
        rows.append({"text": line["text"], "crisis": crisis, "category": kind if isinstance(kind, str) else "external"})
    if not rows:
        raise ValueError(f"{path}: no messages")
    return rows


def external_figures(rows: list[dict]) -> dict:
    rules, layers = measure(rows, LAYERS["rules"]), measure(rows, LAYERS["layers"])
    crisis = sum(r["crisis"] for r in rows)
    return {"recall": layers["recall"], "false_positive_rate": layers["false_positive_rate"],
            "rules_recall": rules["recall"], "rules_false_positive_rate": rules["false_positive_rate"],
            "flagged_crisis": round((layers["recall"] or 0) * crisis),
            "flagged_ordinary": round((layers["false_positive_rate"] or 0) * (len(rows) - crisis)),
            "crisis": crisis, "ordinary": len(rows) - crisis, "recall_by_kind": layers["recall_by_category"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--external", type=Path, nargs="+", help="external sets to score (default: bench/data's)")
    parser.add_argument("--no-external", action="store_true", help="score the held-out test split only")
    args = parser.parse_args()
    paths = [] if args.no_external else (args.external or EXTERNAL_SETS)
    try:
        externals = {path.name: read_external(path) for path in paths}
    except ValueError as exc:
        sys.exit(f"bench/safety.py: {exc}")
    rows = [r for r in corpus() if r["split"] == "test"]
    safety.assess("warm up")  # loads the weights once, outside the timings
    results = {name: measure(rows, layers) for name, layers in LAYERS.items()}
    print(f"held-out test families ({sum(r['crisis'] for r in rows)} crisis, {sum(not r['crisis'] for r in rows)} "
          "ordinary):")
    for name, result in results.items():
        print(f"{name:>10}: recall {result['recall']} fpr {result['false_positive_rate']} "
              f"p50 {result['p50_ms']} ms p99 {result['p99_ms']} ms")
        print(f"{'':>12}{result['recall_by_category']}")
    rules, layers = results["rules"], results["layers"]
    print(f"layers / rules alone: recall x{(layers['recall'] or 0) / max(rules['recall'] or 0, 1e-9):.1f}, "
          f"p99 latency x{layers['p99_ms'] / max(rules['p99_ms'], 1e-9):.2f}")
    external = {name: external_figures(ext_rows) for name, ext_rows in externals.items()}
    for name, figures in external.items():
        print(f"{name}: layers flag {figures['flagged_crisis']}/{figures['crisis']} crisis (recall "
              f"{figures['recall']}) and {figures['flagged_ordinary']}/{figures['ordinary']} ordinary (fpr "
              f"{figures['false_positive_rate']}); rules alone (baseline): recall {figures['rules_recall']} fpr "
              f"{figures['rules_false_positive_rate']}")
        print(f"{'':>12}{figures['recall_by_kind']}")
    summary = {k: layers[k] for k in ("recall", "false_positive_rate", "recall_by_category", "p99_ms")}
    print(orjson.dumps({**summary, "external": external}).decode())


if __name__ == "__main__":
    main()
