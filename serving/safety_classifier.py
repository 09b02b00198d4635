"""The learned layer of crisis detection: a linear model over hashed word and character n-grams.

It is trained offline by bench/train_safety.py on the train families of bench/safety_corpus.py and exported
to serving/safety_weights.npz (weights, bias, class names, thresholds chosen on the dev families). Scoring is
numpy only, so serving needs no `ml` extra, loads in milliseconds and adds well under a millisecond per
message. Features are taken from the rules' normalized text (slang, leetspeak and misspellings already undone,
invisible characters and look-alike letters already folded), so both layers see the same words.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WEIGHTS_PATH = Path(__file__).with_name("safety_weights.npz")
N_FEATURES = 1 << 17
ORDINARY = "ordinary"


def feature_ids(normalized: str) -> np.ndarray:
    """Hashed ids of word 1-2-grams and character 3-5-grams (within word boundaries padded by spaces)."""
    words = [w for w in normalized.split() if w != "."]
    grams = [f"w:{w}" for w in words] + [f"b:{a} {b}" for a, b in zip(words, words[1:])]
    padded = f" {' '.join(words)} "
    for n in (3, 4, 5):
        grams.extend(f"c:{padded[i:i + n]}" for i in range(len(padded) - n + 1))
    return np.unique(np.fromiter((zlib.crc32(g.encode()) & (N_FEATURES - 1) for g in grams), dtype=np.int64))


@dataclass(frozen=True)
class Score:
    score: float  # probability that the message is a crisis message (1 - P(ordinary))
    category: str  # the most likely crisis category, even when the score is low


class SafetyClassifier:
    def __init__(self, weights: np.ndarray, bias: np.ndarray, classes: list[str], thresholds: dict[str, float]):
        self.weights, self.bias, self.classes = weights.astype(np.float32), bias.astype(np.float32), classes
        self.thresholds = thresholds
        self._ordinary = classes.index(ORDINARY)

    @classmethod
    def load(cls, path: Path = WEIGHTS_PATH) -> SafetyClassifier:
        with np.load(path, allow_pickle=False) as data:
            thresholds = dict(zip(data["threshold_names"].tolist(), data["threshold_values"].tolist()))
            return cls(data["weights"], data["bias"], data["classes"].tolist(), thresholds)

    def score(self, normalized: str) -> Score:
        logits = self.weights[feature_ids(normalized)].sum(axis=0) + self.bias
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        crisis = probabilities.copy()
        crisis[self._ordinary] = -1.0
        return Score(score=float(1.0 - probabilities[self._ordinary]), category=self.classes[int(crisis.argmax())])


@functools.cache
def default() -> SafetyClassifier:
    return SafetyClassifier.load()
