"""The served image model: enhance (description, suggested tags, category), search and people, from one version.

This module owns the format of an image version folder: trainer/image_training.py writes the files named below and
this reads them. It needs numpy and safetensors only (no torch), so every serving replica can load it.

* tagger.safetensors + tagger.json: an MLP on the L2-normalized image embedding with a multi-label tag head and a
  category head (forward pass in numpy, identical to the trainer's torch module).
* category_patterns.json: per category its image count, common caption words, co-occurring tags, and the counts the
  naive-Bayes category guess from caption words and tags is made of.
* synonyms.json: tag -> [[synonym, similarity, why], ...] (why: the evidence, absent in older versions). face_clusters.json: people, with stable person ids.
* search_index.json + search_vectors.safetensors: per image its owner pseudonym, category, tags and caption words;
  the image embeddings and per-tag centroids for matching by look. training_report.json: the seed's report.

Erasure: the trainer drops erased images at the next run; until then without_owners() gives a model that hides
those owners' images from search and people at once (the index knows each image's owner pseudonym). Aggregates
(category patterns, tag vocabulary, synonyms, tagger weights) hold no single image and change at the next run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from safetensors.numpy import load_file

from consumers.image_anon import normalize_tag

TAGGER_WEIGHTS = "tagger.safetensors"
TAGGER_VOCABULARY = "tagger.json"
CATEGORY_PATTERNS = "category_patterns.json"
SYNONYMS = "synonyms.json"
FACE_CLUSTERS = "face_clusters.json"
SEARCH_INDEX = "search_index.json"
SEARCH_VECTORS = "search_vectors.safetensors"
TRAINING_REPORT = "training_report.json"

STOP_WORDS = frozenset(
    "a about above after again against all am an and any are as at be because been before being below between both "
    "but by can could did do does doing down during each few for from further had has have having he her here hers "
    "herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on "
    "once only or other our ours out over own same she should so some such than that the their theirs them then "
    "there these they this those through to too under until up very was we were what when where which while who "
    "whom why will with you your yours photo picture image pic seen".split())
_PLACEHOLDER = re.compile(r"\[[^\]]*\]")  # the text anonymizer's [PERSON_3f2a]: no meaning to learn
_TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
FIELD_WEIGHTS = {"tag": 1.0, "category": 0.8, "word": 0.6}  # how much a match in each field of an image counts
LOOK_WEIGHT = 0.25  # most a look-alike (embedding) match adds: below any word match, so tagged images rank first
DESCRIPTION_TERMS = 3  # "commonly associated with" this many terms, as in the seed


def terms_of(text: str) -> list[str]:
    """Caption and query words: lower case, placeholders and stop-words removed, at least one letter."""
    words = _TOKEN.findall(_PLACEHOLDER.sub(" ", text.lower()))
    return [word for word in words if len(word) > 1 and word not in STOP_WORDS and not word.isdigit()]


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero): the tagger's input and the search vectors' form."""
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


def assign_faces(persons: list[dict[str, Any]], cut: float, faces: list[list[float]]) -> list[str | None]:
    """Each face of one image -> the person (of face_clusters.json's persons, one owner's) the clustering would
    merge it into, or None: its average cosine distance to the person's faces is within the clustering's cut.
    The closest pairs go first and one image shows a person once."""
    persons = [p for p in persons if "cohesion" in p]
    if not persons or not faces:
        return [None] * len(faces)
    centres = np.asarray([p["centroid"] for p in persons], float)
    if any(len(face) != centres.shape[1] for face in faces):
        raise ValueError(f"a face embedding needs {centres.shape[1]} numbers")
    # For unit vectors the mean distance to a person's faces is 1 - cohesion * cos(face, centroid).
    distance = 1 - unit_rows(np.asarray(faces, float)) @ centres.T * np.asarray([p["cohesion"] for p in persons])
    distance[~np.isfinite(distance)] = np.inf  # a face with NaN or infinite numbers is nobody
    found: list[str | None] = [None] * len(faces)
    taken: set[int] = set()
    for face, person in zip(*np.unravel_index(np.argsort(distance, axis=None), distance.shape)):
        if distance[face, person] > cut:
            break
        if found[face] is None and person not in taken:
            found[face] = persons[person]["person_id"]
            taken.add(person)
    return found


def read_json(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


@dataclass(frozen=True)
class Tagger:
    """relu(x W1 + b1) -> sigmoid tag head and softmax category head; x the unit-length image embedding."""

    tags: tuple[str, ...]
    categories: tuple[str, ...]
    weights: dict[str, np.ndarray]  # trunk.weight/bias, tags.weight/bias, category.weight/bias (torch layout)

    @classmethod
    def load(cls, folder: Path) -> "Tagger | None":
        if not (folder / TAGGER_WEIGHTS).exists():
            return None
        vocabulary = read_json(folder / TAGGER_VOCABULARY)
        return cls(tuple(vocabulary["tags"]), tuple(vocabulary["categories"]), load_file(folder / TAGGER_WEIGHTS))

    @property
    def dim(self) -> int:
        return self.weights["trunk.weight"].shape[1]

    def predict(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(tag probabilities, category probabilities), one row per embedding."""
        hidden = np.maximum(unit_rows(embeddings) @ self.weights["trunk.weight"].T + self.weights["trunk.bias"], 0)
        tag_logits = hidden @ self.weights["tags.weight"].T + self.weights["tags.bias"]
        category_logits = hidden @ self.weights["category.weight"].T + self.weights["category.bias"]
        return 1 / (1 + np.exp(-tag_logits)), _softmax(category_logits)


def _softmax(logits: np.ndarray) -> np.ndarray:
    if logits.shape[-1] == 0:
        return logits  # a tagger trained without categories
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class _SearchIndex:
    images: list[dict[str, Any]]  # image_id, owner, category, tags, words
    postings: dict[str, tuple[np.ndarray, np.ndarray]]  # term -> (image rows, field weights)
    vectors: np.ndarray  # unit image embeddings (zero rows for images without one)
    term_vectors: dict[str, tuple[np.ndarray, float]]  # tag -> (unit centroid, similarity where a match starts)

    @classmethod
    def load(cls, folder: Path) -> "_SearchIndex":
        index = read_json(folder / SEARCH_INDEX)
        arrays = load_file(folder / SEARCH_VECTORS)
        term_vectors = {term: (arrays["terms"][row], threshold)
                        for row, (term, threshold) in enumerate(index["vector_terms"])}
        return cls(index["images"], _postings(index["images"]), arrays["images"], term_vectors)

    @classmethod
    def empty(cls) -> "_SearchIndex":
        return cls([], {}, np.zeros((0, 0), np.float32), {})


def _postings(images: list[dict[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """term -> the rows of the images it occurs in and its best field weight there (a tag also counts per word)."""
    best: dict[str, dict[int, float]] = {}
    for row, image in enumerate(images):
        fields = [("word", image["words"]), ("tag", image["tags"]),
                  ("tag", [word for tag in image["tags"] for word in terms_of(tag)]),
                  ("category", [image["category"]] if image["category"] else [])]
        for field, terms in fields:
            for term in terms:
                rows = best.setdefault(term, {})
                rows[row] = max(rows.get(row, 0.0), FIELD_WEIGHTS[field])
    return {term: (np.fromiter(rows, int), np.fromiter(rows.values(), float)) for term, rows in best.items()}


def _log_likelihoods(patterns: dict[str, dict[str, Any]], categories: list[str], counts: str) -> dict[str, np.ndarray]:
    """item -> log P(item | category) for each category, Laplace-smoothed: naive Bayes over caption words or tags."""
    tables = [patterns[c][counts] for c in categories]
    vocabulary = sorted({item for table in tables for item in table})
    totals = np.array([sum(table.values()) for table in tables], float) + len(vocabulary)
    return {item: np.log((np.array([table.get(item, 0) for table in tables], float) + 1) / totals)
            for item in vocabulary}


class ImageModel:
    """One version's image model. Never changed after construction, so requests may share it freely."""

    def __init__(self, *, tagger: Tagger | None, patterns: dict[str, dict[str, Any]],
                 synonyms: dict[str, list[list[Any]]], persons: list[dict[str, Any]], index: _SearchIndex,
                 report: dict[str, Any], hidden_owners: frozenset[str] = frozenset(), face_cut: float = 0.0) -> None:
        self.tagger = tagger
        self.patterns = patterns
        self.synonyms = synonyms
        self.report = report
        self._persons = persons
        self._face_cut = face_cut  # the clustering's cut: a new face joins a person within it
        self._index = index
        self.hidden_owners = hidden_owners
        self._hidden_rows = np.array([image["owner"] in hidden_owners for image in index.images], bool)
        self._hidden_images = {image["image_id"] for image in index.images if image["owner"] in hidden_owners}
        self._categories = sorted(patterns)
        counts = np.array([patterns[c]["count"] for c in self._categories], float)
        self._log_prior = np.log(counts / counts.sum()) if self._categories else counts
        self._word_evidence = _log_likelihoods(patterns, self._categories, "word_counts")
        self._tag_evidence = _log_likelihoods(patterns, self._categories, "tag_counts")

    @classmethod
    def load(cls, path: Path) -> "ImageModel":
        path = Path(path)
        clusters = read_json(path / FACE_CLUSTERS)
        return cls(tagger=Tagger.load(path), patterns=read_json(path / CATEGORY_PATTERNS),
                   synonyms=read_json(path / SYNONYMS), persons=clusters["persons"],
                   index=_SearchIndex.load(path), report=read_json(path / TRAINING_REPORT),
                   face_cut=clusters.get("threshold", 0.0))

    @classmethod
    def empty(cls) -> "ImageModel":
        """Version 0, the base model: it knows no tags, categories, images or people yet."""
        return cls(tagger=None, patterns={}, synonyms={}, persons=[], index=_SearchIndex.empty(), report={})

    def without_owners(self, owner_pseudonyms: set[str]) -> "ImageModel":
        """The same model with these owners' images hidden from search and people (erasure, before the next run)."""
        hidden = self.hidden_owners | frozenset(owner_pseudonyms)
        return ImageModel(tagger=self.tagger, patterns=self.patterns, synonyms=self.synonyms, persons=self._persons,
                          index=self._index, report=self.report, hidden_owners=hidden, face_cut=self._face_cut)

    def only_owner(self, owner_pseudonym: str) -> "ImageModel":
        """The same model showing one owner's images only: what a caller naming that owner may see."""
        return self.without_owners({image["owner"] for image in self._index.images} - {owner_pseudonym})

    # --- enhance -------------------------------------------------------------------------------------------------
    def enhance(self, *, caption: str | None = None, tags: list[str] | None = None,
                embedding: list[float] | None = None, limit: int = 10) -> dict[str, Any]:
        """Raises ValueError when the embedding's dimension is not the tagger's."""
        given = [normalize_tag(tag) for tag in tags or [] if normalize_tag(tag)]
        words = terms_of(caption) if caption else []
        tag_probabilities, category_probabilities = self._tagger_guess(embedding)
        category_scores = self._category_scores(words, given, category_probabilities)
        category = max(category_scores, key=category_scores.get) if category_scores else None
        suggested = self._suggest(given, category_scores, tag_probabilities)[:limit]
        return {"description": self._describe(caption, category, suggested, words), "suggested_tags": suggested,
                "category": category}

    def _tagger_guess(self, embedding: list[float] | None) -> tuple[dict[str, float], dict[str, float]]:
        if embedding is None or self.tagger is None:
            return {}, {}
        if len(embedding) != self.tagger.dim:
            raise ValueError(f"embedding has {len(embedding)} numbers; this model expects {self.tagger.dim}")
        tag_rows, category_rows = self.tagger.predict(np.asarray([embedding], float))
        return dict(zip(self.tagger.tags, tag_rows[0].tolist())), dict(zip(self.tagger.categories,
                                                                           category_rows[0].tolist()))

    def _category_scores(self, words: list[str], tags: list[str],
                         tagger_probabilities: dict[str, float]) -> dict[str, float]:
        """Posterior over categories: the tagger's and naive Bayes over caption words and tags, multiplied; empty
        when nothing given is known (a guess from the prior alone would be no information)."""
        known = [self._word_evidence[w] for w in words if w in self._word_evidence] + [
            self._tag_evidence[t] for t in tags if t in self._tag_evidence]
        if not self._categories or not (known or tagger_probabilities):
            return {}
        log_scores = self._log_prior + sum(known, np.zeros(len(self._categories)))
        if tagger_probabilities:
            log_scores = log_scores + np.log([tagger_probabilities.get(c, 0.0) + 1e-6 for c in self._categories])
        return dict(zip(self._categories, _softmax(log_scores).tolist()))

    def _suggest(self, given: list[str], category_scores: dict[str, float],
                 tag_probabilities: dict[str, float]) -> list[str]:
        """Tags ranked by how often images of the likely categories carry them and by the tagger's probability;
        given tags, and synonyms of given or already suggested ones, are skipped."""
        scores: dict[str, float] = {}
        for category, weight in category_scores.items():
            count = self.patterns[category]["count"] or 1
            for tag, tag_count in self.patterns[category]["tag_counts"].items():
                scores[tag] = scores.get(tag, 0.0) + weight * tag_count / count
        if tag_probabilities:
            # Geometric mean: a tag must suit both the likely categories and this image's look.
            scores = {tag: math.sqrt(scores.get(tag, 0.0) * p) for tag, p in tag_probabilities.items()}
        ranked = sorted((tag for tag, score in scores.items() if score > 0), key=lambda tag: (-scores[tag], tag))
        taken = set(given) | {pair[0] for tag in given for pair in self.synonyms.get(tag, [])}
        suggested = []
        for tag in ranked:
            if tag not in taken:
                suggested.append(tag)
                taken |= {tag} | {pair[0] for pair in self.synonyms.get(tag, [])}
        return suggested

    @staticmethod
    def _describe(caption: str | None, category: str | None, suggested: list[str], words: list[str]) -> str:
        """The seed's style: "a woman wearing red dress, commonly associated with fashion, portrait, formal"."""
        terms = [term for term in dict.fromkeys(([category] if category else []) + suggested)
                 if term not in words][:DESCRIPTION_TERMS]
        base = caption.strip() if caption and caption.strip() else (f"a {category} image" if category else "")
        return f"{base}, commonly associated with {', '.join(terms)}" if base and terms else base

    # --- search and people ---------------------------------------------------------------------------------------
    def search(self, q: str, limit: int = 20) -> dict[str, Any]:
        """Images by caption words, tags, categories and their learned synonyms, then by look (embedding)."""
        expanded, reasons = self._expand(q)
        images = self._index.images
        scores = np.zeros(len(images))
        for term, weight in expanded.items():
            if term in self._index.postings:
                rows, field_weights = self._index.postings[term]
                scores[rows] += weight * field_weights * math.log(1 + len(images) / len(rows))
            if term in self._index.term_vectors and len(images):
                centroid, threshold = self._index.term_vectors[term]
                closeness = (self._index.vectors @ centroid - threshold) / max(1 - threshold, 1e-6)
                scores += LOOK_WEIGHT * weight * np.clip(closeness, 0, 1)
        scores[self._hidden_rows] = 0
        best = [row for row in np.argsort(-scores, kind="stable")[:max(limit, 0)] if scores[row] > 0]
        return {"results": [{"image_id": images[row]["image_id"], "score": round(float(scores[row]), 4)}
                            for row in best],
                # The contract's list of terms stays a list of strings (clients read it so); why each term was
                # added, and its weight, are beside it.
                "expanded_terms": list(expanded),
                "expansions": [{"term": term, "weight": round(weight, 4), "why": reasons[term]}
                               for term, weight in expanded.items()]}

    def _expand(self, q: str) -> tuple[dict[str, float], dict[str, str]]:
        """(term -> weight, term -> why it was added): query terms (the whole query too, when it is a tag) with
        weight 1, then their synonyms by similarity, with the evidence the trainer found for each."""
        phrase = normalize_tag(q)
        terms = ([phrase] if phrase in self.synonyms or phrase in self._index.postings else []) + terms_of(q)
        expanded = dict.fromkeys(terms, 1.0)
        reasons = dict.fromkeys(terms, "in the query")
        for term in terms:
            for synonym, similarity, *why in self.synonyms.get(term, []):
                if similarity > expanded.get(synonym, 0.0):
                    expanded[synonym] = similarity
                    reasons[synonym] = f"synonym of {term}: {why[0] if why else 'learned'}"
        return expanded, reasons

    def people(self) -> list[dict[str, Any]]:
        """[{"person_id", "image_ids"}]: each person the clusterer found, minus images of hidden owners."""
        people = []
        for person in self._persons:
            image_ids = [i for i in person["image_ids"] if i not in self._hidden_images]
            if image_ids:
                people.append({"person_id": person["person_id"], "image_ids": image_ids})
        return people

    def identify(self, owner: str, faces: list[list[float]]) -> list[str | None]:
        """The person of this owner (pseudonym) each face of one new image shows, or None (unknown); see
        assign_faces. Raises ValueError when a face's dimension is not the persons'."""
        if owner in self.hidden_owners:
            return [None] * len(faces)
        return assign_faces([p for p in self._persons if p.get("owner") == owner], self._face_cut, faces)

    def warm_up(self) -> None:
        """Run every path once (tagger, naive Bayes, postings, look-alike matching, people) before the swap."""
        embedding = [0.0] * self.tagger.dim if self.tagger else None
        self.enhance(caption="warm up", tags=list(self.synonyms)[:1], embedding=embedding)
        self.search("warm up")
        self.people()
