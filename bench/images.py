"""The image family's goal metrics (issue 4) on synthetic photo libraries (tests/image_synth.py).

A first version is trained from scratch on half the library, a second continued from it on all of it (and, for the
time ratio, one from scratch on all of it); goals are scored on the second, tags on a held-out seed. Baselines in
the same run: suggesting the library's three most common tags to every image, and search by exact tag (no learned
synonyms; its recall and precision measured as ours are). synonym_pairs_right: how many of the learnt synonym
pairs are names of one concept. The headline is enhance from the embedding alone on held-out images beside
k-nearest neighbours over the stored images' embeddings (the same input); --synonym-share below 1 gives synonyms embeddings that do not coincide.
People are also scored on the held-out images' faces, which the clustering never saw (model.identify), beside
assigning every face to its owner's nearest person centre (no cut; the same input).

Then the same figures (apart_*) on libraries from tests/image_synth_apart.py, a generator written without reading
tests/image_synth.py: other themes and names, a nonlinear embedding, 20+ people with unequal photo counts. Its
model is trained from scratch on the stored library; baselines as above, in the same run on the same input.
report_held_out_* are the training report's own figures on the held-out split of the stored library.
And once more (blind_*) on tests/image_synth_blind.py, a third generator written by someone who had not read the
image model, merged after the model was frozen and scored as it came, tuned on nothing.
The last line is one JSON object.

    .venv/bin/python bench/images.py [--images 1500] [--held-out 500] [--apart-dim 384] [--blind-dim 512]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402

from serving.image_model import FACE_CLUSTERS, ImageModel, Tagger, read_json, unit_rows  # noqa: E402
from tests.image_synth import (SyntheticLibrary, SyntheticWorld, anonymized_samples, enhance_scores,  # noqa: E402
                               held_out_people_f1, held_out_tag_f1, people_pairwise_f1, secrets_at_rest,
                               synonym_search_scores, unconsented_images_in_people)
from tests.image_synth_apart import ApartWorld, apart_samples  # noqa: E402
from tests.image_synth_blind import BlindWorld, blind_samples  # noqa: E402
from trainer.image_training import ImageHParams, train_image  # noqa: E402


Vocabulary = Callable[[str], set[str]]


def popular_tags_precision(stored: SyntheticLibrary, held_out: SyntheticLibrary,
                           vocabulary: Vocabulary = SyntheticWorld.vocabulary) -> float:
    top = [tag for tag, _ in Counter(t for e in stored.events for t in e.get("tags", [])).most_common(3)]
    right = sum(tag in vocabulary(held_out.truth[e["image_id"]].category)
                for e in held_out.events for tag in top)
    return right / (3 * len(held_out.events))


def knn_embedding_scores(stored: SyntheticLibrary, held_out: SyntheticLibrary, k: int = 10,
                         vocabulary: Vocabulary = SyntheticWorld.vocabulary) -> tuple[float, float]:
    """The embedding-only baseline: each held-out image gets the three tags and the category most common among its
    k nearest stored images (cosine), scored as enhance_scores scores the model given the embedding alone."""
    train = [e for e in stored.events if e.get("embedding")]
    vectors = unit_rows(np.asarray([e["embedding"] for e in train], float))
    queries = unit_rows(np.asarray([e["embedding"] for e in held_out.events], float))
    right_tags = right_categories = 0
    for event, similarities in zip(held_out.events, queries @ vectors.T):
        truth = held_out.truth[event["image_id"]].category
        near = [train[row] for row in np.argsort(-similarities)[:k]]
        top = [tag for tag, _ in Counter(t for e in near for t in e.get("tags", [])).most_common(3)]
        right_tags += sum(tag in vocabulary(truth) for tag in top)
        votes = Counter(e["category"] for e in near if e.get("category"))
        right_categories += bool(votes) and votes.most_common(1)[0][0] == truth
    return right_tags / (3 * len(held_out.events)), right_categories / len(held_out.events)


class ExactTagSearch:
    """The search baseline: a query finds the stored images carrying its own tag, nothing else."""

    def __init__(self, stored: SyntheticLibrary) -> None:
        self.events = stored.events

    def search(self, q: str, limit: int) -> dict[str, list[dict[str, str]]]:
        return {"results": [{"image_id": e["image_id"]} for e in self.events if q in e.get("tags", [])][:limit]}


def search_figures(model: ImageModel, stored: SyntheticLibrary,
                   world: SyntheticWorld | ApartWorld | BlindWorld) -> dict:
    """Synonym search recall and precision, ours and the exact-tag baseline's (synonym_search_scores for both),
    and the share of the learnt synonym pairs that are names of one concept."""
    recall, precision = synonym_search_scores(model, stored, world)
    exact_recall, exact_precision = synonym_search_scores(ExactTagSearch(stored), stored, world)
    names_of = {name: set(group) for group in world.synonym_groups for name in group}
    pairs = {tuple(sorted((tag, synonym))) for tag, found in model.synonyms.items() for synonym, *_ in found}
    right = sum(b in names_of.get(a, ()) for a, b in pairs)
    return {"synonym_search_recall": round(recall, 4), "baseline_synonym_search_recall": round(exact_recall, 4),
            "synonym_recall_ratio": round(recall / exact_recall, 3),
            "synonym_search_precision": round(precision, 4),
            "baseline_synonym_search_precision": round(exact_precision, 4),
            "synonym_pairs": len(pairs), "synonym_pairs_right": right}


def nearest_centre(version: Path) -> Callable[[str, list[list[float]]], list[str | None]]:
    """The held-out people baseline: every face goes to its owner's nearest person centre (cosine), no cut."""
    persons = read_json(version / FACE_CLUSTERS)["persons"]

    def assign(owner: str, faces: list[list[float]]) -> list[str | None]:
        mine = [p for p in persons if p["owner"] == owner]
        if not mine:
            return [None] * len(faces)
        similarity = unit_rows(np.asarray(faces, float)) @ np.asarray([p["centroid"] for p in mine], float).T
        return [mine[int(row.argmax())]["person_id"] for row in similarity]
    return assign


def people_figures(model: ImageModel, version: Path, held_out: SyntheticLibrary) -> dict[str, float]:
    ours, baseline = held_out_people_f1(model, held_out), held_out_people_f1(model, held_out, nearest_centre(version))
    return {"held_out_people_f1": round(ours, 4), "baseline_held_out_people_f1": round(baseline, 4),
            "held_out_people_ratio": round(ours / baseline, 3) if baseline else None}


def library_figures(world: ApartWorld | BlindWorld, stored: SyntheticLibrary, held_out: SyntheticLibrary,
                    samples: list[dict]) -> dict[str, object]:
    """The headline figures on a library another generator made, each beside its same-input baseline, from a
    model trained from scratch on the stored library's samples."""
    with tempfile.TemporaryDirectory() as registry:
        version = Path(registry) / "1"
        metrics = train_image(parent_dir=None, out_dir=version, samples=samples, new_ids=None,
                              hparams=ImageHParams())
        model = ImageModel.load(version)
        precision, accuracy = enhance_scores(model, held_out, ("embedding",), world.vocabulary)
        knn_precision, knn_accuracy = knn_embedding_scores(stored, held_out, vocabulary=world.vocabulary)
        return {
            "people_in_world": world.people,
            "tag_precision_at_3_embedding_only": round(precision, 4),
            "knn_tag_precision_at_3_embedding_only": round(knn_precision, 4),
            "embedding_tag_precision_vs_knn": round(precision / knn_precision, 3),
            "category_accuracy_embedding_only": round(accuracy, 4),
            "knn_category_accuracy_embedding_only": round(knn_accuracy, 4),
            "embedding_category_accuracy_vs_knn": round(accuracy / knn_accuracy, 3),
            **search_figures(model, stored, world),
            "people_pairwise_f1": round(people_pairwise_f1(model, stored), 4),
            **people_figures(model, version, held_out),
            "people": metrics["people"],
            "unconsented_images_in_people": unconsented_images_in_people(model, stored),
            **{f"report_held_out_{name}": value for name, value in metrics["report"]["held_out"].items()},
        }


def written_apart_figures(prefix: str, world: ApartWorld | BlindWorld,
                          to_samples: Callable[[SyntheticLibrary], list[dict]],
                          args: argparse.Namespace) -> dict[str, object]:
    """library_figures on a stored and a held-out library of another generator's world, named prefix_*."""
    stored, held_out = world.library(args.images, seed=11), world.library(args.held_out, seed=13)
    figures = library_figures(world, stored, held_out, to_samples(stored))
    return {f"{prefix}_{name}": value for name, value in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1500, help="stored images (half before the parent)")
    parser.add_argument("--held-out", type=int, default=500)
    parser.add_argument("--noise", type=float, default=0.8, help="image embedding noise (norm)")
    parser.add_argument("--face-noise", type=float, default=0.35, help="face embedding noise (norm)")
    parser.add_argument("--concept-strength", type=float, default=1.0, help="how much tags show in embeddings")
    parser.add_argument("--synonym-share", type=float, default=1.0,
                        help="how much a synonym's embedding direction is its twin's (1: they coincide)")
    parser.add_argument("--dim", type=int, default=64, help="embedding dimension")
    parser.add_argument("--persons-per-owner", type=int, default=2, help="people in each of the 8 owners' photos")
    parser.add_argument("--apart-dim", type=int, default=384, help="the second generator's embedding dimension")
    parser.add_argument("--apart-noise", type=float, default=1.0, help="the second generator's embedding noise")
    parser.add_argument("--apart-face-noise", type=float, default=0.45, help="... and face noise")
    parser.add_argument("--apart-name-overlap", type=float, default=0.5,
                        help="how much of its look a name shares with its concept's other names (1: the same)")
    parser.add_argument("--blind-dim", type=int, default=512, help="the third generator's embedding dimension")
    parser.add_argument("--blind-face-noise", type=float, default=0.4, help="... and face noise")
    args = parser.parse_args()
    world = SyntheticWorld(noise=args.noise, face_noise=args.face_noise, concept_strength=args.concept_strength,
                           synonym_share=args.synonym_share, dim=args.dim, persons_per_owner=args.persons_per_owner)
    hparams = ImageHParams()
    first = world.library(args.images // 2, seed=1)
    stored = first + world.library(args.images - args.images // 2, seed=2)
    held_out = world.library(args.held_out, seed=3)
    with tempfile.TemporaryDirectory() as registry:
        parent, child, scratch = (Path(registry) / name for name in ("1", "2", "scratch"))
        first_samples, samples = anonymized_samples(first), anonymized_samples(stored)
        train_image(parent_dir=None, out_dir=parent, samples=first_samples, new_ids=None, hparams=hparams)
        started = time.perf_counter()
        metrics = train_image(parent_dir=parent, out_dir=child, samples=samples, hparams=hparams,
                              new_ids={s["event_id"] for s in samples} - {s["event_id"] for s in first_samples})
        incremental_s = time.perf_counter() - started
        started = time.perf_counter()
        train_image(parent_dir=None, out_dir=scratch, samples=samples, new_ids=None, hparams=hparams)
        scratch_s = time.perf_counter() - started
        model = ImageModel.load(child)
        precision, accuracy = enhance_scores(model, held_out)
        embedding_precision, embedding_accuracy = enhance_scores(model, held_out, ("embedding",))
        at_rest = [str(samples).encode()] + [p.read_bytes() for v in (parent, child) for p in v.iterdir()]
        result = {
            "tag_precision_at_3": round(precision, 4),
            "category_accuracy": round(accuracy, 4),
            "tag_precision_at_3_embedding_only": round(embedding_precision, 4),
            "category_accuracy_embedding_only": round(embedding_accuracy, 4),
            **search_figures(model, stored, world),
            "people_pairwise_f1": round(people_pairwise_f1(model, stored), 4),
            **people_figures(model, child, held_out),
            "unconsented_images_in_people": unconsented_images_in_people(model, stored),
            "secret_words_at_rest": len(secrets_at_rest(stored, at_rest)),
            "held_out_tag_f1_parent": round(held_out_tag_f1(Tagger.load(parent), held_out, hparams.tag_threshold), 4),
            "held_out_tag_f1": round(held_out_tag_f1(Tagger.load(child), held_out, hparams.tag_threshold), 4),
            "mode": metrics["mode"],
            "people": metrics["people"],
            **{f"report_held_out_{name}": value for name, value in metrics["report"]["held_out"].items()},
            "incremental_s": round(incremental_s, 3),
            "from_scratch_s": round(scratch_s, 3),
        }
    knn_precision, knn_accuracy = knn_embedding_scores(stored, held_out)
    result["knn_tag_precision_at_3_embedding_only"] = round(knn_precision, 4)
    result["knn_category_accuracy_embedding_only"] = round(knn_accuracy, 4)
    result["embedding_tag_precision_vs_knn"] = round(embedding_precision / knn_precision, 3)
    result["embedding_category_accuracy_vs_knn"] = round(embedding_accuracy / knn_accuracy, 3)
    result["baseline_tag_precision_at_3"] = round(popular_tags_precision(stored, held_out), 4)
    result["tag_precision_ratio"] = round(precision / result["baseline_tag_precision_at_3"], 3)
    result["incremental_speedup"] = round(scratch_s / incremental_s, 3)
    result.update(written_apart_figures("apart", ApartWorld(
        dim=args.apart_dim, noise=args.apart_noise, face_noise=args.apart_face_noise,
        name_overlap=args.apart_name_overlap), apart_samples, args))
    result.update(written_apart_figures("blind", BlindWorld(dim=args.blind_dim, face_noise=args.blind_face_noise),
                                        blind_samples, args))
    for name, value in result.items():
        print(f"{name:>36}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
