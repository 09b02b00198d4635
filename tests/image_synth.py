"""Synthetic photo-library events (image.v1) with real structure, for the image model's tests and bench.

A SyntheticWorld fixes what a library is made of: category centres, one direction per tag concept, tag vocabularies
where some concepts have several names (car / automobile: an image uses one of them), owners and the people in their
photos. library(n, seed=...) samples events from it, so two seeds give a training set and a held-out set of the
same world. An image embedding is its category centre plus the directions of its tag concepts plus noise; a face
embedding is its person's centre plus noise (strangers appear once). Events carry what anonymization must remove:
EXIF with GPS, serials and owner names (several reader spellings), names in captions, owner-only tags (a pet's
name), faces without face consent, and an unknown extra field.

Below the generator: stand-ins for the anonymizer's callables, and the goal metrics tests and bench share.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from consumers.image_anon import anonymize_image_event
from serving.image_model import ImageModel, Tagger

# Per category: its concepts; a concept with several names is a synonym group. Some names are shared by categories.
CATEGORIES: dict[str, tuple[tuple[str, ...], ...]] = {
    "vehicles": (("car", "automobile"), ("motorbike", "motorcycle"), ("truck", "lorry"), ("road",), ("wheel",),
                 ("highway",), ("parking",), ("red",)),
    "fashion": (("saree", "sari"), ("dress", "gown"), ("red",), ("formal",), ("silk",), ("jewellery", "jewelry"),
                ("model",), ("runway",)),
    "landscape": (("mountain",), ("sky",), ("scenic",), ("nature",), ("lake",), ("sunset",), ("forest", "woods"),
                  ("outdoor",)),
    "portrait": (("woman",), ("man",), ("smiling", "happy", "joyful"), ("face",), ("studio",),
                 ("closeup", "close-up"), ("eyes",), ("indoor",)),
    "food": (("pizza",), ("dessert",), ("coffee",), ("restaurant",), ("plate",), ("salad",), ("delicious", "tasty"),
             ("dinner",)),
    "pets": (("puppy", "pup"), ("cat",), ("kitten", "kitty"), ("fur",), ("cute",), ("leash",), ("garden",),
             ("playing",)),
    "architecture": (("building",), ("church",), ("bridge",), ("skyscraper", "highrise"), ("tower",), ("facade",),
                     ("historic",), ("city",)),
    "sports": (("football", "soccer"), ("ball",), ("stadium", "arena"), ("player",), ("team",), ("goal",),
               ("running",), ("outdoor",)),
}
# Caption templates per category; {a} and {b} are names of two of the image's concepts.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "vehicles": ("a {a} parked near the {b}", "driving a {a} along the {b}"),
    "fashion": ("a woman wearing {a} {b}", "a model in a {a} and {b} outfit"),
    "landscape": ("a view of the {a} and the {b}", "{a} over the {b} at dusk"),
    "portrait": ("a {a} {b} portrait", "a {a} looking at the camera, {b}"),
    "food": ("a plate of {a} with {b}", "{a} and {b} for lunch"),
    "pets": ("a {a} playing with the {b}", "my {a} asleep on the {b}"),
    "architecture": ("the old {a} next to the {b}", "a {a} seen from the {b}"),
    "sports": ("a {a} match at the {b}", "the {a} and the {b} before kickoff"),
}
NAMES = ("Alice", "Priya", "Tomasz", "Grace", "Mohammed", "Olu")  # people named in captions (PII)
PET_NAMES = ("biscuit", "pickle", "mochi", "rolo", "ziggy", "noodle", "pixel", "waffle")  # one owner each


@dataclass(frozen=True, kw_only=True)
class ImageTruth:
    """What the generator knows about one image and a model must discover."""

    owner: str  # the raw user_id
    category: str
    persons: tuple[int, ...]  # the person behind each face; strangers get a number of their own
    face_consent: bool


@dataclass(frozen=True, kw_only=True)
class SyntheticLibrary:
    events: list[dict]
    truth: dict[str, ImageTruth]  # by image_id
    secrets: frozenset[str]  # GPS values, serials and owner names as text: none may be found at rest

    def __add__(self, other: "SyntheticLibrary") -> "SyntheticLibrary":
        return SyntheticLibrary(events=self.events + other.events, truth={**self.truth, **other.truth},
                                secrets=self.secrets | other.secrets)


class SyntheticWorld:
    def __init__(self, *, seed: int = 7, dim: int = 64, owners: int = 8, persons_per_owner: int = 2,
                 concept_strength: float = 1.0, noise: float = 0.8, face_noise: float = 0.35,
                 ambiguity: float = 0.15, synonym_share: float = 1.0) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.concept_strength = concept_strength  # how far an image's tag concepts move its embedding
        self.noise = noise  # norm of the noise added to an image embedding
        self.face_noise = face_noise  # norm of the noise added to a face embedding
        self.ambiguity = ambiguity  # share of images that also look like some other category (a dog at a match)
        self.centres = {category: _unit(rng.normal(size=dim)) for category in CATEGORIES}
        concepts = {concept[0]: concept for groups in CATEGORIES.values() for concept in groups}
        self.directions = {name: _unit(rng.normal(size=dim)) for name in concepts}
        # Each name of a concept looks like the concept by synonym_share and like itself by the rest (1: synonyms'
        # embeddings coincide; 0: they are unrelated). A separate generator keeps the draws above unchanged.
        own = np.random.default_rng(seed + 1)
        self.name_directions = {
            name: _unit(synonym_share * self.directions[concept[0]]
                        + np.sqrt(max(1 - synonym_share ** 2, 0.0)) * _unit(own.normal(size=dim)))
            for concept in concepts.values() for name in concept}
        self.owners = [f"user-{index}" for index in range(owners)]
        self.person_centres = [_unit(rng.normal(size=dim)) for _ in range(owners * persons_per_owner)]
        self.persons_of = {owner: list(range(index * persons_per_owner, (index + 1) * persons_per_owner))
                           for index, owner in enumerate(self.owners)}
        # A quarter of the owners never give face consent.
        self.face_consent_owners = set(self.owners[: owners - max(1, owners // 4)])

    @property
    def synonym_groups(self) -> list[tuple[str, ...]]:
        groups = {concept for concepts in CATEGORIES.values() for concept in concepts if len(concept) > 1}
        return sorted(groups)

    @staticmethod
    def vocabulary(category: str) -> set[str]:
        """Every tag name of a category, synonyms included: a suggestion in here counts as right."""
        return {name for concept in CATEGORIES[category] for name in concept}

    def library(self, size: int, *, seed: int, start: datetime | None = None) -> SyntheticLibrary:
        rng = np.random.default_rng(seed)
        start = start or datetime(2026, 1, 1, tzinfo=timezone.utc)
        events, truth, secrets = [], {}, set()
        for index in range(size):
            image_id = f"img-{seed}-{index}"
            event, image_truth = self._event(rng, image_id, f"ev-{seed}-{index}", start + timedelta(minutes=index),
                                             secrets)
            events.append(event)
            truth[image_id] = image_truth
        return SyntheticLibrary(events=events, truth=truth, secrets=frozenset(secrets))

    def _event(self, rng: np.random.Generator, image_id: str, event_id: str, when: datetime,
               secrets: set[str]) -> tuple[dict, ImageTruth]:
        owner = self.owners[rng.integers(len(self.owners))]
        category = list(CATEGORIES)[rng.integers(len(CATEGORIES))]
        concepts = [CATEGORIES[category][i] for i in rng.choice(len(CATEGORIES[category]), 3, replace=False)]
        tags = [concept[rng.integers(len(concept))] for concept in concepts]
        embedding = self.centres[category] + self.concept_strength * sum(
            self.name_directions[tag] for tag in tags) / np.sqrt(len(concepts))
        if rng.random() < self.ambiguity:
            embedding = embedding + 0.7 * self.centres[list(CATEGORIES)[rng.integers(len(CATEGORIES))]]
        embedding = _unit(embedding + rng.normal(size=self.dim) * self.noise / np.sqrt(self.dim))
        pet_name = PET_NAMES[self.owners.index(owner) % len(PET_NAMES)]
        if category == "pets" and rng.random() < 0.6:
            tags.append(pet_name)  # a tag only this owner uses
        caption = rng.choice(TEMPLATES[category]).format(a=tags[0], b=tags[1])
        if rng.random() < 0.15:
            caption = f"{NAMES[rng.integers(len(NAMES))]} and {caption}"
        persons = self._persons(rng, owner, category)
        face_consent = owner in self.face_consent_owners and rng.random() < 0.9
        exif = self._exif(rng, secrets)
        event = {
            "schema": "image.v1", "event_id": event_id, "ts": when.isoformat().replace("+00:00", "Z"),
            "user_id": owner, "image_id": image_id,
            "caption": caption if rng.random() < 0.85 else None,
            "tags": tags if rng.random() < 0.9 else [],
            "category": category if rng.random() < 0.95 else None,
            "embedding": [round(float(v), 6) for v in embedding],
            "faces": [self._face(rng, person) for person in persons],
            "exif": exif, "consent": {"training": True, "faces": face_consent},
            "device_fingerprint": f"fp-{rng.integers(10**9)}",  # unknown to the schema: must not travel on
        }
        event = {key: value for key, value in event.items() if value is not None}
        return event, ImageTruth(owner=owner, category=category, persons=persons, face_consent=face_consent)

    def _persons(self, rng: np.random.Generator, owner: str, category: str) -> tuple[int, ...]:
        if rng.random() >= (0.9 if category == "portrait" else 0.3):
            return ()
        persons = []
        for _ in range(rng.integers(1, 3)):
            if rng.random() < 0.85:
                persons.append(int(rng.choice(self.persons_of[owner])))
            else:
                persons.append(len(self.person_centres) + int(rng.integers(10**9)))  # a stranger, seen once
        return tuple(dict.fromkeys(persons))

    def _face(self, rng: np.random.Generator, person: int) -> dict:
        centre = self.person_centres[person] if person < len(self.person_centres) else _unit(rng.normal(size=self.dim))
        face = _unit(centre + rng.normal(size=self.dim) * self.face_noise / np.sqrt(self.dim))
        return {"embedding": [round(float(v), 6) for v in face], "box": [float(v) for v in rng.integers(0, 900, 4)]}

    @staticmethod
    def _exif(rng: np.random.Generator, secrets: set[str]) -> dict:
        # Six decimals: the seconds' text is then found nowhere else by chance.
        latitude = [int(rng.integers(0, 90)), int(rng.integers(0, 60)), round(float(rng.uniform(10, 60)), 6)]
        longitude = [int(rng.integers(0, 180)), int(rng.integers(0, 60)), round(float(rng.uniform(10, 60)), 6)]
        body_serial, lens_serial = f"BSN{rng.integers(10**8, 10**9)}", f"LSN{rng.integers(10**8, 10**9)}"
        owner_name = f"{NAMES[rng.integers(len(NAMES))]} Photographer{rng.integers(1000)}"
        secrets.update({str(latitude[2]), str(longitude[2]), body_serial, lens_serial, owner_name})
        # Readers spell tags differently; half the events use exifread's "GROUP Name" keys.
        gps = "GPS " if rng.random() < 0.5 else ""
        exif_group, image_group = ("EXIF ", "Image ") if gps else ("", "")
        return {
            f"{gps}GPSLatitude": latitude, f"{gps}GPSLatitudeRef": "N", f"{gps}GPSLongitude": longitude,
            f"{gps}GPSLongitudeRef": "W", f"{gps}GPSAltitude": round(float(rng.uniform(0, 500)), 1),
            "GPSInfo": {"GPSLatitude": latitude, "GPSLongitude": longitude},
            f"{exif_group}BodySerialNumber": body_serial, f"{exif_group}LensSerialNumber": lens_serial,
            "SerialNumber": body_serial, "CameraSerialNumber": body_serial, "CameraOwnerName": owner_name,
            f"{image_group}Artist": owner_name, f"{image_group}Copyright": f"(c) {owner_name}",
            "MakerNote": f"{body_serial}:{lens_serial}", "ImageUniqueID": f"{rng.integers(16**15):015x}",
            f"{image_group}Make": "Canon", f"{image_group}Model": "Canon EOS R6",
            f"{exif_group}ExposureTime": [1, 250], f"{exif_group}FNumber": 2.8,
            f"{exif_group}ISOSpeedRatings": 400, f"{exif_group}FocalLength": 35.0, "Orientation": 1, "Flash": 0,
            "PixelXDimension": 6000, "PixelYDimension": 4000, "DateTimeOriginal": "2025:12:24 18:02:11",
            "Software": "Lightroom 14.1",
        }


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


# --- stand-ins for the anonymizer's callables, and the goal metrics -------------------------------------------
def stand_in_anonymize_text(text: str, conversation: str) -> str:
    """Replaces the names this generator puts in captions with placeholders in the text anonymizer's style."""
    for name in NAMES:
        digest = hashlib.sha256(f"{conversation}|{name}".encode()).hexdigest()[:4]
        text = text.replace(name, f"[PERSON_{digest}]")
    return text


def stand_in_pseudonymize(user_id: str) -> str:
    return "u_" + hmac.new(b"test-key", user_id.encode(), hashlib.sha256).hexdigest()[:24]


def anonymized_samples(library: SyntheticLibrary) -> list[dict]:
    return [anonymize_image_event(event, anonymize_text=stand_in_anonymize_text, pseudonymize=stand_in_pseudonymize)
            for event in library.events]


def enhance_scores(model: ImageModel, library: SyntheticLibrary,
                   fields: tuple[str, ...] = ("caption", "tags", "embedding"),
                   vocabulary: Callable[[str], set[str]] = SyntheticWorld.vocabulary) -> tuple[float, float]:
    """(tag precision@3, category accuracy) of enhance() given these fields of each event. A suggested tag is
    right when it is in the vocabulary (synonyms included) of the image's true category."""
    right_tags = right_categories = 0
    for event in library.events:
        truth = library.truth[event["image_id"]]
        result = model.enhance(**{field: event.get(field) for field in fields})
        right_tags += sum(tag in vocabulary(truth.category) for tag in result["suggested_tags"][:3])
        right_categories += result["category"] == truth.category
    return right_tags / (3 * len(library.events)), right_categories / len(library.events)


def synonym_search_scores(model: ImageModel, library: SyntheticLibrary, world: SyntheticWorld) -> tuple[float, float]:
    """(recall, precision): each name of each synonym group as a query, limited to as many results as there are
    relevant images (the stored images tagged with any name of the group); recall is the share of relevant images
    found, precision the share of returned images that are relevant (1.0 when nothing is returned)."""
    found = relevant_total = returned = 0
    for group in world.synonym_groups:
        relevant = {e["image_id"] for e in library.events if set(e.get("tags", [])) & set(group)}
        for name in group:
            results = {r["image_id"] for r in model.search(name, limit=len(relevant))["results"]}
            found += len(relevant & results)
            relevant_total += len(relevant)
            returned += len(results)
    return found / relevant_total, found / returned if returned else 1.0


def synonym_search_recall(model: ImageModel, library: SyntheticLibrary, world: SyntheticWorld) -> float:
    return synonym_search_scores(model, library, world)[0]


def people_pairwise_f1(model: ImageModel, library: SyntheticLibrary) -> float:
    """F1 over pairs of images said to share a person, against pairs of face-consented images that truly do."""
    truth = {image_id: set(t.persons) for image_id, t in library.truth.items() if t.face_consent and t.persons}
    true_pairs = {pair for pair in itertools.combinations(sorted(truth), 2) if truth[pair[0]] & truth[pair[1]]}
    said_pairs = {pair for person in model.people() for pair in itertools.combinations(sorted(person["image_ids"]), 2)}
    hits = len(true_pairs & said_pairs)
    return 2 * hits / (len(true_pairs) + len(said_pairs)) if true_pairs or said_pairs else 1.0


def held_out_people_f1(model: ImageModel, library: SyntheticLibrary,
                       assign: Callable[[str, list[list[float]]], list[str | None]] | None = None) -> float:
    """people_pairwise_f1 on images the clustering never saw: each face-consented image's faces are assigned to
    its owner's known persons (model.identify unless `assign` is given; None is unknown), and pairs of these
    images said to share a person are scored against the pairs that truly do."""
    assign = assign or model.identify
    said, truth = {}, {}
    for event in library.events:
        image_truth = library.truth[event["image_id"]]
        if image_truth.face_consent and event.get("faces"):
            found = assign(stand_in_pseudonymize(event["user_id"]), [face["embedding"] for face in event["faces"]])
            said[event["image_id"]] = {person for person in found if person}
            truth[event["image_id"]] = set(image_truth.persons)
    pairs = list(itertools.combinations(sorted(truth), 2))
    true_pairs = {pair for pair in pairs if truth[pair[0]] & truth[pair[1]]}
    said_pairs = {pair for pair in pairs if said[pair[0]] & said[pair[1]]}
    hits = len(true_pairs & said_pairs)
    return 2 * hits / (len(true_pairs) + len(said_pairs)) if true_pairs or said_pairs else 1.0


def unconsented_images_in_people(model: ImageModel, library: SyntheticLibrary) -> int:
    return sum(1 for person in model.people() for image_id in person["image_ids"]
               if image_id in library.truth and not library.truth[image_id].face_consent)


def person_ids_by_truth(model: ImageModel, library: SyntheticLibrary) -> dict[int, str]:
    """Each true person -> the person id most of their images are under (images showing one person only)."""
    votes: dict[int, list[str]] = {}
    for person in model.people():
        for image_id in person["image_ids"]:
            persons = library.truth[image_id].persons if image_id in library.truth else ()
            if len(persons) == 1:
                votes.setdefault(persons[0], []).append(person["person_id"])
    return {true: max(set(ids), key=ids.count) for true, ids in votes.items()}


def held_out_tag_f1(tagger: Tagger, library: SyntheticLibrary, threshold: float) -> float:
    """Micro F1 of the tags the tagger gives at this probability against each image's own (stored) tags."""
    samples = anonymized_samples(library)
    probabilities, _ = tagger.predict(np.asarray([s["embedding"] for s in samples]))
    hits = said = actual = 0
    for sample, row in zip(samples, probabilities):
        guessed = {tag for tag, p in zip(tagger.tags, row) if p >= threshold}
        hits += len(guessed & set(sample["tags"]))
        said += len(guessed)
        actual += len(sample["tags"])
    return 2 * hits / (said + actual)


_WORD, _WORD_BYTES = re.compile(r"[\w.-]+"), re.compile(rb"[\w.-]+")


def secrets_at_rest(library: SyntheticLibrary, blobs: list[bytes]) -> set[bytes]:
    """Words of the library's secrets, names and raw user ids found in these stored bytes. Every such word is
    distinctive (a serial, GPS seconds to six places, a name), so one pass over each blob's words finds them."""
    forbidden = library.secrets | set(NAMES) | {truth.owner for truth in library.truth.values()}
    words = {word.encode() for secret in forbidden for word in _WORD.findall(secret) if len(word) > 2}
    return {word for blob in blobs for word in _WORD_BYTES.findall(blob)} & words
