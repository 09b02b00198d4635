"""Crisis detection on the held-out test families of bench/safety_corpus.py (never trained or tuned on):
recall and false-positive rate per category for the rules alone, the classifier alone and the layers
together, and the latency each adds per message (p50, p99). The baseline is the rules alone, measured in the
same run on the same messages; a check-in counts as a flag.

    python bench/safety.py                   # the test split
    python bench/safety.py --external FILE   # a JSONL file of {"text", "crisis": bool} written apart

Last line: JSON {"recall", "false_positive_rate", "recall_by_category", "p99_ms"} of the layers together.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--external", type=Path, help="JSONL of {text, crisis} written apart from the corpus")
    args = parser.parse_args()
    if args.external:
        try:
            rows = [{**orjson.loads(line), "category": "external"} for line in args.external.read_bytes().splitlines()
                    if line.strip()]
        except (OSError, orjson.JSONDecodeError, TypeError) as exc:
            sys.exit(f"bench/safety.py: cannot read {args.external}: {exc}")
        if not all(isinstance(r.get("text"), str) and isinstance(r.get("crisis"), bool) for r in rows):
            sys.exit(f"bench/safety.py: every line of {args.external} must be {{\"text\": str, \"crisis\": bool}}")
    else:
        rows = [r for r in corpus() if r["split"] == "test"]
    safety.assess("warm up")  # loads the weights once, outside the timings
    results = {name: measure(rows, layers) for name, layers in LAYERS.items()}
    for name, result in results.items():
        print(f"{name:>10}: recall {result['recall']} fpr {result['false_positive_rate']} "
              f"p50 {result['p50_ms']} ms p99 {result['p99_ms']} ms")
        print(f"{'':>12}{result['recall_by_category']}")
    rules, layers = results["rules"], results["layers"]
    print(f"layers / rules alone: recall x{(layers['recall'] or 0) / max(rules['recall'] or 0, 1e-9):.1f}, "
          f"p99 latency x{layers['p99_ms'] / max(rules['p99_ms'], 1e-9):.2f}")
    print(orjson.dumps({k: layers[k] for k in ("recall", "false_positive_rate", "recall_by_category", "p99_ms")})
          .decode())


if __name__ == "__main__":
    main()
