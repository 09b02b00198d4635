"""Train the crisis classifier on the corpus's train families, choose its thresholds on the dev families, and
export it to serving/safety_weights.npz (numpy only at serving time). Needs scikit-learn (the `ml` extra).

    python bench/train_safety.py

Thresholds, chosen for recall on dev (the test families are never looked at here):
- check_in: the highest score at which the layers together (rules or classifier) flag 90% of the dev crisis
  messages (recall first: a check-in is a kind message, a miss could cost a life), floored at CHECK_IN_FLOOR:
  below it short everyday messages ("I feel tense") would get check-ins and the chat would be unusable;
- crisis: the score above which at most 1% of dev ordinary messages fall (a crisis reply rather than a
  check-in), never below check_in.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.safety_corpus import corpus  # noqa: E402
from serving import safety  # noqa: E402
from serving.safety_classifier import N_FEATURES, ORDINARY, WEIGHTS_PATH, SafetyClassifier, feature_ids  # noqa: E402

CHECK_IN_FLOOR = 0.05


def matrix(texts: list[str]) -> sparse.csr_matrix:
    rows, cols = [], []
    for i, text in enumerate(texts):
        ids = feature_ids(safety.normalize(text))
        rows.extend([i] * len(ids))
        cols.extend(ids.tolist())
    return sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(texts), N_FEATURES))


def main() -> None:
    rows = corpus()
    train = [r for r in rows if r["split"] == "train"]
    dev = [r for r in rows if r["split"] == "dev"]
    labels = [r["category"] for r in train]
    model = LogisticRegression(C=0.5, max_iter=300)
    # Ordinary messages weigh as much in total as crisis ones, twice over: an unknown message ("hello") starts
    # from "ordinary", and only words that mean risk move it.
    crisis_rows = sum(r["crisis"] for r in train)
    ordinary_weight = 2.0 * crisis_rows / (len(train) - crisis_rows)
    weights_by_row = np.array([1.0 if r["crisis"] else ordinary_weight for r in train])
    model.fit(matrix([r["text"] for r in train]), labels, sample_weight=weights_by_row)
    classes = model.classes_.tolist()
    weights, bias = model.coef_.T.astype(np.float16), model.intercept_.astype(np.float32)
    classifier = SafetyClassifier(weights, bias, classes, {})
    scores = np.array([classifier.score(safety.normalize(r["text"])).score for r in dev])
    ruled = np.array([safety.rules(r["text"]) is not None for r in dev])
    crisis = np.array([r["crisis"] for r in dev])
    ordinary_scores = np.sort(scores[~crisis])
    crisis_threshold = float(ordinary_scores[int(len(ordinary_scores) * 0.99)])
    missed_by_rules = np.sort(scores[crisis & ~ruled])
    allowed_misses = int(0.10 * crisis.sum())
    check_in = float(missed_by_rules[allowed_misses]) if len(missed_by_rules) > allowed_misses else 0.5
    check_in = max(check_in, CHECK_IN_FLOOR)
    crisis_threshold = max(crisis_threshold, check_in)
    names = np.array(["check_in", "crisis"])
    np.savez_compressed(WEIGHTS_PATH, weights=weights, bias=bias, classes=np.array(classes),
                        threshold_names=names, threshold_values=np.array([check_in, crisis_threshold]))
    flagged = ruled | (scores >= check_in)
    print(f"dev: recall {flagged[crisis].mean():.3f} fpr {flagged[~crisis].mean():.3f} "
          f"check_in {check_in:.3f} crisis {crisis_threshold:.3f} -> {WEIGHTS_PATH}")


if __name__ == "__main__":
    main()
