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


# Words grouped by what they mean for risk, so that a phrasing never seen in training still lights up the same
# features as the ones that were ("swallowed" + "bleach" ~ "took" + "pills"). A message gets one feature per
# concept it contains and one per pair of concepts: the model learns which meanings together are a crisis.
# Written from general knowledge of how these things are said, not from any scored message.
CONCEPTS: dict[str, frozenset[str]] = {name: frozenset(words.split()) for name, words in {
    "death": "die dies dying died dead death deaths deadly lethal kill kills killing killed suicide suicidal "
             "grave funeral coffin corpse alive living exist existing existence breathing heart",
    "ending": "end ends ending ended over gone finish finished stop stopped quit leave leaving disappear vanish "
              "goodbye bye farewell out",
    "forever": "forever permanently permanent good never last final finally anymore longer again",
    "pills": "pills pill tablets tablet meds medication medicine paracetamol painkillers antidepressants insulin "
             "dose doses prescription packet packets box bottle capsules",
    "poison": "bleach antifreeze weedkiller poison poisonous poisoned chemicals chemical toxic cleaner fumes "
              "exhaust charcoal gas",
    "ingest": "took take taken taking swallowed swallow swallowing drank drink drinking downed ate eaten overdose "
              "overdosed overdosing",
    "height": "bridge roof cliff balcony ledge edge top floor tower storey jump jumping jumped fall falling "
              "drop high height",
    "rail_road": "train trains tracks track railway rail platform station crossing motorway road traffic lorry "
                 "bus car",
    "water": "sea river water lake canal drown drowning drowned waves",
    "blade": "cut cuts cutting blade blades razor razors knife knives sharp slice slit wound wounds scar scars "
             "bleed bleeding blood burn burns burned burnt lighter",
    "body": "arm arms wrist wrists leg legs thigh thighs skin neck throat head face chest",
    "hang": "hang hanging hanged rope noose knot ligature",
    "plan": "plan plans planned planning date decided decision arranged scheduled ready method methods way ways "
            "how where place spot worked prepared",
    "soon": "tonight tomorrow today now soon weekend friday saturday sunday monday morning midnight",
    "goodbye": "goodbye goodbyes bye farewell letter letters note notes message video thank thanks love sorry "
               "remember forgive",
    "giving": "give giving gave given away belongings possessions things stuff affairs savings",
    "hopeless": "point pointless hopeless hope worthless useless burden nothing nobody noone trapped waste "
                "empty numb better tired",
    "violence": "hit hits hitting beat beats beating punch punched punches kick kicks kicked slap slaps slapped "
                "choke chokes choked strangle strangled grabbed pushed shoved threw throws hurt hurts hurting "
                "bruise bruises bruised rape raped abuse abused forces forced threatens threatened threat",
    "fear": "scared afraid terrified frightened fear hide hiding safe unsafe angry temper",
    "kin": "husband wife partner boyfriend girlfriend ex dad father mum mother stepdad stepmum brother sister "
           "uncle he she him",
    "self": "myself me i my",
    "purpose": "purpose deliberately intentionally meant wanted want wish",
    "unreal": "film movie book novel game documentary essay lecture module course news story character show "
              "series episode quiz museum",
    "everyday": "coffee work job exam homework traffic battery phone laptop gym holiday party weekend hair "
                "cake dinner shopping rain weather football chess",
}.items()}
# word -> the concepts it belongs to, in CONCEPTS' order (feature_ids sorts them anyway).
_CONCEPTS_OF: dict[str, tuple[str, ...]] = {
    word: tuple(name for name, words in CONCEPTS.items() if word in words)
    for word in set().union(*CONCEPTS.values())
}


def feature_ids(normalized: str) -> np.ndarray:
    """Hashed ids of word 1-2-grams, character 3-5-grams (within word boundaries padded by spaces), and the
    concepts the words belong to, alone and in pairs."""
    words = [w for w in normalized.split() if w != "."]
    grams = [f"w:{w}" for w in words] + [f"b:{a} {b}" for a, b in zip(words, words[1:])]
    concepts = sorted({c for w in words for c in _CONCEPTS_OF.get(w, ())})
    grams.extend(f"k:{c}" for c in concepts)
    grams.extend(f"p:{a}|{b}" for i, a in enumerate(concepts) for b in concepts[i + 1:])
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
