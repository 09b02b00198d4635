"""One training run of the image family: stored image.sample.v1 dicts -> a version folder serving can load.

Learned, and written in the format serving/image_model.py defines (safetensors for weights, JSON for the rest):
a) the tagger, continued from the parent's weights on new images plus a replay of older ones; from scratch when
   there is no usable parent, the embedding dimension or width changed, or an image the parent learned from is gone
   (erased or replaced: its influence must leave the weights). Vocabulary changes map rows by name;
b) category patterns; c) tag synonyms (company, then a mixture over co-occurrence, captions and look); d) people (per owner, a data-chosen cut; ids kept from the parent's people);
e) the search index; f) the seed's training report, with each part's quality on the held-out split.
Everything but the tagger is recomputed from the current samples every run, so erased images leave it at once.
Labels used by fewer than `min_label_owners` owners never enter the shared vocabulary: one family's pet name or
private word is not suggested to anyone else.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import combinations
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
from safetensors.numpy import save_file as save_arrays
from safetensors.torch import load_file as load_tensors, save_file as save_tensors
from scipy.optimize import linear_sum_assignment
from scipy.stats import nbinom, norm
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from serving.image_model import (CATEGORY_PATTERNS, FACE_CLUSTERS, SEARCH_INDEX, SEARCH_VECTORS, SYNONYMS,
                                 TAGGER_VOCABULARY, TAGGER_WEIGHTS, TRAINING_REPORT, Tagger, assign_faces, read_json,
                                 terms_of, unit_rows)

Progress = Callable[[dict[str, Any]], None]  # {"step", "steps", "stage"}, as the trainer service reads it


_STAGES = ("tagger", "category patterns", "synonyms", "people", "search index", "report")  # progress steps


@dataclass(frozen=True, kw_only=True)
class ImageHParams:
    hidden_dim: int = 128  # width of the tagger's shared layer; changing it retrains from scratch
    epochs_from_scratch: int = 100  # passes over the training split when there is no usable parent
    epochs_incremental: int = 40  # passes over new images plus their replay when continuing from the parent
    replay_ratio: float = 2.0  # older images replayed per new image, so continuing does not forget
    batch_size: int = 128
    learning_rate: float = 1e-2
    weight_decay: float = 1e-4
    holdout_fraction: float = 0.15  # images kept out of the tagger for its metrics, chosen by a hash of event_id
    # so an image stays on its side of the split from run to run (a parent is never scored on what it learned)
    tag_threshold: float = 0.5  # tagger probability at which a tag counts as predicted, for tag F1
    min_label_images: int = 2  # a tag or category joins the vocabulary once this many images carry it
    min_label_owners: int = 2  # ... and this many owners use it (a label one owner uses may identify them)
    pattern_terms: int = 10  # common caption words and co-occurring tags listed per category
    synonym_min_images: int = 5  # tags on fewer embedded images are too noisy to compare
    synonym_em_steps: int = 300  # EM steps fitting the synonym mixture (see _synonym_mixture)
    look_quantile: float = 0.2  # search matches a tag by look from the similarity this share of its images is below
    min_person_faces: int = 2  # faces needed before a group becomes a person
    person_match_distance: float = 0.5  # furthest a cluster's centre may be from a parent person's to keep its id
    report_top_categories: int = 5
    seed: int = 0


def train_image(*, parent_dir: Path | None, out_dir: Path, samples: list[dict], new_ids: set[str] | None,
                hparams: ImageHParams, progress: Progress | None = None) -> dict:
    """samples: every stored image.sample.v1 (erased ones gone); new_ids: event_ids new since the parent, None to
    train from scratch. The parent's people keep their ids whenever parent_dir is given, even from scratch.
    Returns metrics: mode, tag_f1 and category_accuracy on the held-out split (*_parent: the parent's tagger on
    the same split; None when there is nothing to score), vocabulary sizes, people, report."""
    def step(done: int) -> None:
        if progress is not None:
            progress({"step": done, "steps": len(_STAGES), "stage": _STAGES[done] if done < len(_STAGES) else "done"})

    out_dir.mkdir(parents=True, exist_ok=True)
    images = _latest_per_image(samples)
    tags = _shared_labels(images, "tags", hparams)
    categories = _shared_labels(images, "category", hparams)
    step(0)
    metrics = _train_tagger(images, tags, categories, parent_dir, new_ids, out_dir, hparams)
    step(1)
    _write_json(out_dir / CATEGORY_PATTERNS, _category_patterns(images, tags, categories, hparams))
    step(2)
    synonyms = _synonyms(images, tags, hparams)
    _write_json(out_dir / SYNONYMS, synonyms)
    step(3)
    people = _people(images, parent_dir, hparams)
    _write_json(out_dir / FACE_CLUSTERS, people)
    step(4)
    _write_search_index(images, tags, out_dir, hparams)
    step(5)
    held_out = {"images": metrics["holdout_images"], "tag_f1": metrics["tag_f1"],
                "category_accuracy": metrics["category_accuracy"], **_held_out_people(images, people, hparams)}
    report = {**_report(images, hparams), "held_out": held_out}
    _write_json(out_dir / TRAINING_REPORT, report)
    step(6)
    return {**metrics, "tag_vocabulary": len(tags), "categories": len(categories),
            "synonym_pairs": sum(map(len, synonyms.values())) // 2, "people": len(people["persons"]),
            "report": report}


def _latest_per_image(samples: list[dict]) -> list[dict]:
    """One sample per image_id: the latest (an app re-sending an image replaces what it said before)."""
    latest: dict[str, dict] = {}
    for sample in sorted(samples, key=lambda s: (s["ts"], s["event_id"])):
        latest[sample["image_id"]] = sample
    return list(latest.values())


def _labels(image: dict, field: str) -> list[str]:
    return image["tags"] if field == "tags" else [image["category"]] if image["category"] else []


def _shared_labels(images: list[dict], field: str, hp: ImageHParams) -> list[str]:
    counts, owners = Counter(), {}
    for image in images:
        for label in _labels(image, field):
            counts[label] += 1
            owners.setdefault(label, set()).add(image["owner"])
    return sorted(label for label, count in counts.items()
                  if count >= hp.min_label_images and len(owners[label]) >= hp.min_label_owners)


def _common_length(vectors: list[list[float] | None]) -> int | None:
    """The deployment's dimension: the one most vectors have (validation already rejects others)."""
    lengths = Counter(len(vector) for vector in vectors if vector)
    return lengths.most_common(1)[0][0] if lengths else None


# --- a) the tagger ------------------------------------------------------------------------------------------------
class _TaggerNet(torch.nn.Module):
    """serving.image_model.Tagger is this forward pass in numpy; the parameter names are the file's."""

    def __init__(self, dim: int, hidden: int, tags: int, categories: int) -> None:
        super().__init__()
        self.trunk = torch.nn.Linear(dim, hidden)
        self.tags = torch.nn.Linear(hidden, tags)
        self.category = torch.nn.Linear(hidden, categories)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = torch.relu(self.trunk(x))
        return self.tags(hidden), self.category(hidden)


def _in_holdout(event_id: str, fraction: float) -> bool:
    bucket = int.from_bytes(hashlib.sha256(event_id.encode()).digest()[:4], "big") / 2**32
    return bucket < fraction


def _train_tagger(images: list[dict], tags: list[str], categories: list[str], parent_dir: Path | None,
                  new_ids: set[str] | None, out_dir: Path, hp: ImageHParams) -> dict:
    dim = _common_length([i["embedding"] for i in images])
    usable = [i for i in images if i["embedding"] and len(i["embedding"]) == dim]
    holdout = [i for i in usable if _in_holdout(i["event_id"], hp.holdout_fraction)]
    train = [i for i in usable if not _in_holdout(i["event_id"], hp.holdout_fraction)]
    if not train or not (tags or categories):
        return {"mode": "none", "train_images": 0, "holdout_images": len(holdout), "tag_f1": None,
                "category_accuracy": None, "tag_f1_parent": None, "category_accuracy_parent": None}
    parent = _parent_tagger(parent_dir, dim, hp) if new_ids is not None else None
    old = [i for i in train if i["event_id"] not in (new_ids or set())]
    rng = np.random.default_rng(hp.seed)
    if parent is not None and len(old) >= parent[1]["trained_images"]:
        mode, epochs = "incremental", hp.epochs_incremental
        new = [i for i in train if i["event_id"] in new_ids]
        replay = math.ceil(hp.replay_ratio * len(new))
        fit_on = new + [old[k] for k in rng.choice(len(old), min(replay, len(old)), replace=False)] if new else []
    else:
        mode, epochs, fit_on = "from_scratch", hp.epochs_from_scratch, train
    net = _new_net(dim, tags, categories, parent if mode == "incremental" else None, hp)
    with _one_torch_thread():
        _fit(net, fit_on, tags, categories, epochs, hp)
    save_tensors({name: t.detach().contiguous() for name, t in net.state_dict().items()}, out_dir / TAGGER_WEIGHTS)
    _write_json(out_dir / TAGGER_VOCABULARY, {"tags": tags, "categories": categories, "embedding_dim": dim,
                                              "hidden_dim": hp.hidden_dim, "trained_images": len(train)})
    tag_f1, category_accuracy = _score(Tagger.load(out_dir), holdout, hp)
    parent_scores = _score(Tagger.load(parent_dir), holdout, hp) if parent is not None else (None, None)
    return {"mode": mode, "train_images": len(fit_on), "holdout_images": len(holdout), "tag_f1": tag_f1,
            "category_accuracy": category_accuracy, "tag_f1_parent": parent_scores[0],
            "category_accuracy_parent": parent_scores[1]}


def _parent_tagger(parent_dir: Path | None, dim: int, hp: ImageHParams) -> tuple[dict, dict] | None:
    """(weights, vocabulary) of a parent tagger this run can continue from, else None."""
    if parent_dir is None or not (parent_dir / TAGGER_WEIGHTS).exists():
        return None
    vocabulary = read_json(parent_dir / TAGGER_VOCABULARY)
    if vocabulary["embedding_dim"] != dim or vocabulary["hidden_dim"] != hp.hidden_dim:
        return None
    return load_tensors(parent_dir / TAGGER_WEIGHTS), vocabulary


def _new_net(dim: int, tags: list[str], categories: list[str], parent: tuple[dict, dict] | None,
             hp: ImageHParams) -> _TaggerNet:
    """A seeded network; with a parent, its trunk and the head rows of every label both vocabularies share."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(hp.seed)
        net = _TaggerNet(dim, hp.hidden_dim, len(tags), len(categories))
    if parent is None:
        return net
    weights, vocabulary = parent
    with torch.no_grad():
        net.trunk.weight.copy_(weights["trunk.weight"])
        net.trunk.bias.copy_(weights["trunk.bias"])
        for head, names, parent_names in ((net.tags, tags, vocabulary["tags"]),
                                          (net.category, categories, vocabulary["categories"])):
            parent_row = {name: row for row, name in enumerate(parent_names)}
            prefix = "tags" if head is net.tags else "category"
            for row, name in enumerate(names):
                if name in parent_row:
                    head.weight[row] = weights[f"{prefix}.weight"][parent_row[name]]
                    head.bias[row] = weights[f"{prefix}.bias"][parent_row[name]]
    return net


def _fit(net: _TaggerNet, images: list[dict], tags: list[str], categories: list[str], epochs: int,
         hp: ImageHParams) -> None:
    """Adam on tag BCE plus category cross-entropy (images without a category add only the former)."""
    if not images:
        return
    x = torch.tensor(unit_rows(np.asarray([i["embedding"] for i in images], np.float32)))
    tag_row = {tag: row for row, tag in enumerate(tags)}
    tag_targets = torch.zeros(len(images), len(tags))
    for k, image in enumerate(images):
        tag_targets[k, [tag_row[t] for t in image["tags"] if t in tag_row]] = 1.0
    category_row = {category: row for row, category in enumerate(categories)}
    category_targets = torch.tensor([category_row.get(i["category"], -1) for i in images])
    optimizer = torch.optim.AdamW(net.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay)
    generator = torch.Generator().manual_seed(hp.seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(images), generator=generator).split(hp.batch_size):
            tag_logits, category_logits = net(x[batch])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(tag_logits, tag_targets[batch]) if tags \
                else torch.zeros(())
            labelled = category_targets[batch] >= 0
            if categories and labelled.any():
                loss = loss + torch.nn.functional.cross_entropy(category_logits[labelled],
                                                                category_targets[batch][labelled])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """This network is tiny: on a busy CPU, syncing torch's thread pool costs 20x the arithmetic (measured: 0.5 ms
    a step on one thread, 12 ms on two). torch's setting is process-wide, so it is restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _score(tagger: Tagger, holdout: list[dict], hp: ImageHParams) -> tuple[float | None, float | None]:
    """(micro tag F1 over the images' own tags, category accuracy) on the held-out images, as served."""
    if not holdout:
        return None, None
    tag_rows, category_rows = tagger.predict(np.asarray([i["embedding"] for i in holdout], float))
    true_positives = predicted = actual = 0
    for image, row in zip(holdout, tag_rows):
        guessed = {tag for tag, p in zip(tagger.tags, row) if p >= hp.tag_threshold}
        true_positives += len(guessed & set(image["tags"]))
        predicted += len(guessed)
        actual += len(set(image["tags"]))
    tag_f1 = 2 * true_positives / (predicted + actual) if predicted + actual else None
    labelled = [(image["category"], row) for image, row in zip(holdout, category_rows) if image["category"]]
    right = sum(tagger.categories[int(np.argmax(row))] == category for category, row in labelled if len(row))
    return tag_f1, right / len(labelled) if labelled else None


# --- b) category patterns -----------------------------------------------------------------------------------------
def _category_patterns(images: list[dict], tags: list[str], categories: list[str], hp: ImageHParams) -> dict:
    """The seed's {count, common_words, co_occurring_tags} per category, plus the full word and tag counts (each
    image counted once) that serving's category guess uses. Words need as many owners as labels do."""
    words_of = {image["image_id"]: set(terms_of(image["caption"] or "")) for image in images}
    owners: dict[str, set[str]] = {}
    for image in images:
        for word in words_of[image["image_id"]]:
            owners.setdefault(word, set()).add(image["owner"])
    shared_tags = set(tags)
    patterns = {}
    for category in categories:
        members = [image for image in images if image["category"] == category]
        words = Counter(w for i in members for w in words_of[i["image_id"]] if len(owners[w]) >= hp.min_label_owners)
        tag_counts = Counter(t for i in members for t in set(i["tags"]) if t in shared_tags)
        patterns[category] = {
            "count": len(members),
            "common_words": [w for w, _ in sorted(words.items(), key=_by_count)[:hp.pattern_terms]],
            "co_occurring_tags": [t for t, _ in sorted(tag_counts.items(), key=_by_count)[:hp.pattern_terms]],
            "word_counts": dict(sorted(words.items())),
            "tag_counts": dict(sorted(tag_counts.items())),
        }
    return patterns


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


# --- c) synonyms --------------------------------------------------------------------------------------------------
_RIDGE = 1.0  # keeps the per-tag look effects defined for tags that always come together


def _synonyms(images: list[dict], tags: list[str], hp: ImageHParams) -> dict[str, list[list[Any]]]:
    """tag -> [[synonym, score, why]] (why: the evidence that held, for search's expanded_terms). Two tags are
    synonyms when they keep the same company (the other tags and the categories they come with) and the
    posterior of _synonym_mixture, a mixture learnt on this library from three kinds of evidence (how seldom
    they come together, how often a caption uses the other name, how alike they look), is above the data's own
    cut (Otsu's split of every pair's posterior). Any one kind may be missing from a library and then weighs
    nothing: outside data need not give a synonym its twin's look (bench/images.py --synonym-share below 1)."""
    rows = [i for i in images if i["category"] and i["tags"]]
    counts = Counter(t for i in rows for t in set(i["tags"]))
    candidates = [t for t in tags if counts[t] >= hp.synonym_min_images]
    if len(candidates) < 2:
        return {}
    column = {tag: k for k, tag in enumerate(candidates)}
    incidence = np.zeros((len(rows), len(candidates)))
    for k, image in enumerate(rows):
        incidence[k, [column[t] for t in image["tags"] if t in column]] = 1
    membership, owners = _one_hot([i["category"] for i in rows]), _one_hot([i["owner"] for i in rows])
    context = _company(incidence, membership)
    tag_terms = [set(terms_of(tag)) for tag in candidates]
    caption_terms = [set(terms_of(i["caption"] or "")) for i in rows]
    mentions = np.asarray([[bool(terms) and terms <= caption for terms in tag_terms] for caption in caption_terms],
                          float)
    # Only pairs that keep the same company can be names of one thing, and the mixture is fitted on those: the
    # company cut is the data's own (Otsu's split of every pair's), as is the posterior's below.
    upper = np.triu_indices(len(candidates), 1)
    company = context[upper] > _otsu(context[upper])
    if company.sum() < 2:
        return {}
    evidence = _pair_evidence(incidence, membership, mentions, _look(rows, incidence, membership, owners))
    posterior, favoured = _synonym_mixture({name: values[company] for name, values in evidence.items()}, hp)
    synonyms: dict[str, list[list[Any]]] = {}
    cut = _otsu(posterior)  # the data's own split of the posteriors
    for a, b, p, kinds in zip(upper[0][company], upper[1][company], posterior, favoured):
        if p > cut:
            why = ", ".join(["same company"] + [kind for kind, held in zip(_EVIDENCE, kinds) if held])
            for one, other in ((a, b), (b, a)):
                synonyms.setdefault(candidates[one], []).append(
                    [candidates[other], round(float((context[a, b] + p) / 2), 4), why])
    return {tag: sorted(found, key=lambda pair: (-pair[1], pair[0])) for tag, found in sorted(synonyms.items())}


_EVIDENCE = ("seldom together", "captions use the other name", "looks alike")  # _pair_evidence's kinds, in order


def _one_hot(labels: list[str]) -> np.ndarray:
    names = sorted(set(labels))
    matrix = np.zeros((len(labels), len(names)))
    matrix[np.arange(len(labels)), [names.index(label) for label in labels]] = 1
    return matrix


def _company(incidence: np.ndarray, membership: np.ndarray) -> np.ndarray:
    """Tag by tag, the cosine of the tags' company (P(other tag | tag) and P(category | tag)), leaving out each
    other."""
    together = incidence.T @ incidence
    np.fill_diagonal(together, 0)
    per_tag = incidence.sum(0)[:, None]
    company = np.hstack([together, incidence.T @ membership]) / per_tag
    pair_share = together / per_tag
    squares = (company ** 2).sum(1)
    return company @ company.T / np.sqrt(
        np.maximum((squares[:, None] - pair_share ** 2) * (squares[None, :] - pair_share.T ** 2), 1e-12))


def _pair_evidence(incidence: np.ndarray, membership: np.ndarray, mentions: np.ndarray,
                   look: np.ndarray) -> dict[str, np.ndarray]:
    """Per pair of tags (upper triangle): t, images carrying both, and e, what t would be if the tags were
    independent within each category; c, images carrying one (not the other) whose caption names the other, and
    f, what c would be if such images named it as often as the category's images carrying neither do (that rate
    estimated with Jeffreys' prior); g, the
    cosine of the two tags' looks."""
    together = incidence.T @ incidence
    by_category = incidence.T @ membership
    expected = (by_category / np.maximum(membership.sum(0), 1)) @ by_category.T
    named = np.zeros_like(together)
    chance = np.zeros_like(together)
    for category in membership.T.astype(bool):
        tagged, said = incidence[category], mentions[category]
        untagged = 1 - tagged
        named += tagged.T @ (untagged * said)  # [a, b]: tagged a, not b, caption names b
        neither = untagged.T @ untagged
        # Jeffreys' estimate of the rate: none of a few such images naming b is no proof that none ever would
        chance += (tagged.T @ untagged) * (untagged.T @ (untagged * said) + 0.5) / (neither + 1)
    upper = np.triu_indices(len(together), 1)
    return {"t": together[upper], "e": np.maximum(expected[upper], 1e-9), "g": look[upper],
            "c": np.stack([named[upper], named.T[upper]], 1), "f": np.maximum(np.stack([chance[upper],
                                                                                      chance.T[upper]], 1), 1e-9)}


def _synonym_mixture(evidence: dict[str, np.ndarray], hp: ImageHParams) -> tuple[np.ndarray, np.ndarray]:
    """(posterior, favoured): per pair, the posterior that two tags are names of one thing, from a two-class
    mixture fitted to this library by EM (no threshold to tune), and which kinds of evidence (_EVIDENCE) lean
    that way. t is negative binomial with mean (rate x e), each of c's two directions negative binomial with mean
    (rate x f), g normal. Unrelated pairs' captions name the other tag at chance (rate 1); synonyms' at a learnt
    rate of at least 1 (a caption may use the other name); synonyms come together at a learnt rate at most the
    unrelated pairs' (people write one name or the other), and look at least as alike on average. Each count's
    dispersion is learnt and shared by both classes (tags that go together, or captions naming a popular thing,
    make counts wider than Poisson), so a class cannot win a pair by being vaguer. A library whose captions never
    use the other name learns rate 1 for synonyms too, and that evidence then weighs nothing; so for the look."""
    t, e, c, f, g = (evidence[name] for name in "tecfg")
    share, together, named, spreads = 0.05, [1.0, 0.2], [1.0, 2.0], [0.1, 0.1]  # starting guesses only
    deviation = float(g.std()) + 1e-3
    looks = [(float(g.mean()), deviation), (float(g.mean()) + deviation, deviation)]
    terms = np.zeros((len(t), len(_EVIDENCE)))
    posterior = np.zeros(len(t))
    for _ in range(hp.synonym_em_steps):
        terms = np.stack([
            _nbinom_logpmf(t, together[1] * e, spreads[0]) - _nbinom_logpmf(t, together[0] * e, spreads[0]),
            (_nbinom_logpmf(c, named[1] * f, spreads[1]) - _nbinom_logpmf(c, f, spreads[1])).sum(1),
            norm.logpdf(g, *looks[1]) - norm.logpdf(g, *looks[0])], axis=1)
        posterior = 1 / (1 + np.exp(np.clip(np.log((1 - share) / share) - terms.sum(1), -50, 50)))
        share = float(np.clip(posterior.mean(), 1e-4, 0.5))  # synonyms are the fewer pairs
        weights = np.stack([1 - posterior, posterior], 1)
        together = [_rate(t, e, weights[:, 0]), _rate(t, e, weights[:, 1])]
        together[1] = min(together[1], together[0])
        named = [1.0, max(_rate(c, f, weights[:, 1:]), 1.0)]
        spreads = [_shared_spread(t[:, None], e[:, None] * np.asarray(together), weights),
                   _shared_spread(c[:, :, None], f[:, :, None] * np.asarray(named), weights[:, None, :])]
        looks = [_weighted_normal(g, weights[:, 0]), _weighted_normal(g, weights[:, 1])]
        looks[1] = (max(looks[1][0], looks[0][0]), looks[1][1])
    return posterior, terms > 0


def _nbinom_logpmf(counts: np.ndarray, mean: np.ndarray, spread: float) -> np.ndarray:
    """log P(counts) under a negative binomial of this mean and variance mean + spread x mean^2."""
    size = 1 / spread
    return nbinom.logpmf(counts, size, size / (size + mean))


def _rate(counts: np.ndarray, baseline: np.ndarray, weights: np.ndarray) -> float:
    return max(float((weights * counts).sum() / max((weights * baseline).sum(), 1e-9)), 1e-6)


def _shared_spread(counts: np.ndarray, means: np.ndarray, weights: np.ndarray) -> float:
    """The dispersion of negative binomials with these means (the last axis: the class), by weighted moments."""
    excess = (weights * ((counts - means) ** 2 - means)).sum()
    return max(float(excess / max((weights * means ** 2).sum(), 1e-9)), 1e-3)


def _weighted_normal(values: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    total = max(float(weights.sum()), 1e-9)
    mean = float((weights * values).sum() / total)
    return mean, max(float(np.sqrt((weights * (values - mean) ** 2).sum() / total)), 1e-3)


def _look(rows: list[dict], incidence: np.ndarray, membership: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """Tag by tag, the cosine of two tags' own effects on the image embedding: a ridge regression of the
    embeddings on the tags, the category and the owner (a tag's mean image also carries the tags it comes with,
    its category and the camera of the owners who write it: unrelated tags of one category, or two names that
    different owners prefer, looked alike or apart for those reasons alone)."""
    tags = incidence.shape[1]
    dim = _common_length([i["embedding"] for i in rows])
    embedded = np.array([bool(i["embedding"]) and len(i["embedding"]) == dim for i in rows])
    if embedded.sum() < 2:
        return np.zeros((tags, tags))
    x = unit_rows(np.asarray([i["embedding"] for i, keep in zip(rows, embedded) if keep], float))
    design = np.hstack([incidence, membership, owners])[embedded]
    coefficients = np.linalg.solve(design.T @ design + _RIDGE * np.eye(design.shape[1]), design.T @ x)
    effects = unit_rows(coefficients[:tags])
    return effects @ effects.T


# --- d) people ----------------------------------------------------------------------------------------------------
def _people(images: list[dict], parent_dir: Path | None, hp: ImageHParams) -> dict:
    """Consented faces (the only ones stored) clustered within each owner's library, so one person's face never
    links two owners' libraries: average linkage on cosine distance (two faces of one image never count as one
    person), cut at a distance chosen from the data (Otsu's split of every owner's merge heights pooled: merges
    within a person are short, merges between people long). Groups of fewer than min_person_faces faces are in no
    person. Each group keeps the id of the parent's nearest person of the same owner (one-to-one, within
    person_match_distance); others get new ids. Centres are biometric data derived from consented faces,
    recomputed every run (erased faces leave)."""
    parent = read_json(parent_dir / FACE_CLUSTERS) if parent_dir and (parent_dir / FACE_CLUSTERS).exists() else {}
    next_number = parent.get("next_person", 1)
    faces = [(i["owner"], i["image_id"], face["embedding"]) for i in images for face in i["faces"]]
    dim = _common_length([embedding for _, _, embedding in faces])
    faces = [face for face in faces if len(face[2]) == dim]
    by_owner: dict[str, list[int]] = {}
    for k, (owner, _, _) in enumerate(faces):
        by_owner.setdefault(owner, []).append(k)
    vectors = unit_rows(np.asarray([embedding for _, _, embedding in faces], float)) if faces else np.zeros((0, 0))
    trees = {owner: _face_tree(vectors[rows], [faces[k][1] for k in rows])
             for owner, rows in by_owner.items() if len(rows) >= 2}
    heights = np.concatenate([tree[:, 2] for tree in trees.values()]) if trees else np.zeros(0)
    threshold = _otsu(heights) if len(heights) >= 2 else 0.0
    persons = []
    for owner, tree in trees.items():
        rows = np.asarray(by_owner[owner])
        labels = fcluster(tree, t=threshold, criterion="distance")
        for label in sorted(set(labels)):
            members = rows[labels == label]
            if len(members) >= hp.min_person_faces:
                mean = vectors[members].mean(0)
                persons.append({"owner": owner, "members": members, "centre": unit_rows(mean),
                                "cohesion": float(np.linalg.norm(mean))})
    for owner in sorted({p["owner"] for p in persons}):
        mine = [p for p in persons if p["owner"] == owner]
        parents = [p for p in parent.get("persons", []) if p.get("owner") == owner]
        ids, next_number = _stable_person_ids(np.asarray([p["centre"] for p in mine]), parents, next_number, hp)
        for person, person_id in zip(mine, ids):
            person["person_id"] = person_id
    persons = [{"person_id": p["person_id"], "owner": p["owner"], "faces": len(p["members"]),
                "centroid": [round(v, 6) for v in p["centre"].tolist()], "cohesion": round(p["cohesion"], 6),
                "image_ids": sorted({faces[k][1] for k in p["members"]})} for p in persons]
    return {"next_person": next_number, "threshold": round(float(threshold), 6),
            "persons": sorted(persons, key=lambda p: int(p["person_id"].split("-")[1]))}


_APART = 2.0  # the cosine distance given two faces of one image: the largest there is


def _face_tree(vectors: np.ndarray, image_ids: list[str]) -> np.ndarray:
    """Average-linkage merge tree of one owner's faces (scipy's linkage matrix)."""
    distance = np.clip(1 - vectors @ vectors.T, 0, 2)
    same_image = np.asarray(image_ids)[:, None] == np.asarray(image_ids)[None, :]
    distance[same_image] = _APART
    np.fill_diagonal(distance, 0)
    return linkage(squareform(distance, checks=False), method="average")


def _otsu(values: np.ndarray) -> float:
    """The cut that best splits these values into two groups (least within-group variance)."""
    ordered = np.sort(values)
    best, cut = np.inf, float(ordered[-1])
    for k in range(1, len(ordered)):
        low, high = ordered[:k], ordered[k:]
        spread = low.var() * len(low) + high.var() * len(high)
        if spread < best:
            best, cut = spread, float((ordered[k - 1] + ordered[k]) / 2)
    return cut


def _stable_person_ids(centres: np.ndarray, parent_persons: list[dict], next_number: int,
                       hp: ImageHParams) -> tuple[list[str], int]:
    ids: list[str | None] = [None] * len(centres)
    if parent_persons:
        parent_centres = unit_rows(np.asarray([p["centroid"] for p in parent_persons], float))
        if parent_centres.shape[1] == centres.shape[1]:
            distance = np.linalg.norm(centres[:, None, :] - parent_centres[None, :, :], axis=-1)
            for row, col in zip(*linear_sum_assignment(distance)):
                if distance[row, col] <= hp.person_match_distance:
                    ids[row] = parent_persons[col]["person_id"]
    for row in range(len(ids)):
        if ids[row] is None:
            ids[row] = f"person-{next_number}"
            next_number += 1
    return ids, next_number


# --- e) search index, f) report -----------------------------------------------------------------------------------
def _write_search_index(images: list[dict], tags: list[str], out_dir: Path, hp: ImageHParams) -> None:
    """Per image its owner (for erasure filtering), category, tags and caption words; the unit embeddings; and
    per shared tag the mean look of its images with the similarity a look-alike match starts from."""
    dim = _common_length([i["embedding"] for i in images]) or 0
    vectors = np.zeros((len(images), dim), np.float32)
    rows_of: dict[str, list[int]] = {tag: [] for tag in tags}
    for row, image in enumerate(images):
        if image["embedding"] and len(image["embedding"]) == dim:
            vectors[row] = image["embedding"]
            for tag in image["tags"]:
                rows_of.get(tag, []).append(row)
    vectors = unit_rows(vectors)
    vector_terms, term_vectors = [], []
    for tag, tagged in rows_of.items():
        if tagged:
            centre = unit_rows(vectors[tagged].mean(0))
            vector_terms.append([tag, round(float(np.quantile(vectors[tagged] @ centre, hp.look_quantile)), 4)])
            term_vectors.append(centre)
    entries = [{"image_id": i["image_id"], "owner": i["owner"], "category": i["category"], "tags": i["tags"],
                "words": sorted(set(terms_of(i["caption"] or "")))} for i in images]
    _write_json(out_dir / SEARCH_INDEX, {"images": entries, "vector_terms": vector_terms})
    save_arrays({"images": vectors, "terms": np.asarray(term_vectors, np.float32).reshape(len(term_vectors), dim)},
                out_dir / SEARCH_VECTORS)


def _report(images: list[dict], hp: ImageHParams) -> dict:
    categories = Counter(i["category"] for i in images if i["category"])
    return {"total_images": len(images), "total_tags": len({t for i in images for t in i["tags"]}),
            "images_with_faces": sum(1 for i in images if i["faces"]),
            "top_categories": [c for c, _ in sorted(categories.items(), key=_by_count)[:hp.report_top_categories]]}


def _held_out_people(images: list[dict], people: dict, hp: ImageHParams) -> dict[str, Any]:
    """How well people generalise within the owners' own libraries: faces are clustered without the held-out
    split's images, whose faces are then assigned as serving's identify assigns new faces. people_agreement is
    the pairwise F1 of those assignments (pairs of held-out images said to share a person) against the run's
    persons on all faces; None without such pairs. There is no ground truth here, only consistency."""
    holdout = [i for i in images if _in_holdout(i["event_id"], hp.holdout_fraction) and i["faces"]]
    if not holdout:
        return {"people_agreement": None, "held_out_face_images": 0}
    kept = _people([i for i in images if not _in_holdout(i["event_id"], hp.holdout_fraction)], None, hp)
    full: dict[str, set[str]] = {}
    for person in people["persons"]:
        for image_id in person["image_ids"]:
            full.setdefault(image_id, set()).add(person["person_id"])
    dim = _common_length([face["embedding"] for image in images for face in image["faces"]])
    said = {}
    for image in holdout:
        mine = [p for p in kept["persons"] if p["owner"] == image["owner"]]
        faces = [face["embedding"] for face in image["faces"] if len(face["embedding"]) == dim]
        said[image["image_id"]] = {p for p in assign_faces(mine, kept["threshold"], faces) if p}
    # People are per owner, so only two images of one owner can share one: pairs across owners never count, and
    # leaving them out keeps the pairs to each owner's held-out images, not the whole split squared.
    owner_of = {image["image_id"]: image["owner"] for image in holdout}
    by_owner: dict[str, list[str]] = {}
    for image_id in said:
        by_owner.setdefault(owner_of[image_id], []).append(image_id)
    pairs = [pair for ids in by_owner.values() for pair in combinations(ids, 2)]
    true_pairs = {pair for pair in pairs if full.get(pair[0], set()) & full.get(pair[1], set())}
    said_pairs = {pair for pair in pairs if said[pair[0]] & said[pair[1]]}
    total = len(true_pairs) + len(said_pairs)
    return {"people_agreement": round(2 * len(true_pairs & said_pairs) / total, 4) if total else None,
            "held_out_face_images": len(holdout)}


def _write_json(path: Path, value: Any) -> None:
    path.write_bytes(orjson.dumps(value))
