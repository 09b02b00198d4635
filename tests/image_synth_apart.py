"""A second photo-library generator, written apart from tests/image_synth.py: its author did not read that module's
vocabulary, captions or embedding construction, so bench/images.py can score the image model on libraries the
first generator did not make (the issue's "libraries written apart from it"). Only the containers (ImageTruth,
SyntheticLibrary) and the scorers are shared.

Where it differs on purpose:
* themes of unequal size (Zipf-like) whose concepts have one to three names; each owner prefers one name of a
  concept, sometimes writes another, now and then both; a few concepts and filler tags belong to several themes;
* the embedding is no sum of directions: a low-rank latent (theme, concepts, the owner's camera) goes through a
  fixed random tanh layer, then gets a mean offset every image shares (real encoders' embeddings crowd into a
  cone) and noise whose size falls off across dimensions. A name is a subtype of its concept: its images share
  only `name_overlap` of their look with the concept's other names;
* people: households of 3-6 people per owner (20+ in all), photo counts by a power law, up to four faces an image,
  family resemblance within a household, and pose/lighting drawn from directions every face shares; strangers
  appear once; faces carry consent on 70% of images;
* captions from its own phrase bank, which sometimes use a concept's other name than the tag does.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np

from consumers.image_anon import anonymize_image_event
from tests.image_synth import ImageTruth, SyntheticLibrary, stand_in_pseudonymize

# theme -> concepts, each concept the names people write for it (the first is no more "right" than the others)
THEMES: dict[str, tuple[tuple[str, ...], ...]] = {
    "cooking": (("saucepan", "pot"), ("dough", "pastry"), ("oven",), ("herbs", "seasoning"), ("chopping board",)),
    "sailing": (("boat", "vessel", "dinghy"), ("harbor", "marina"), ("waves", "swell"), ("rope",), ("lighthouse",)),
    "hiking": (("trail", "footpath"), ("summit", "peak"), ("backpack", "rucksack"), ("boots",), ("fog", "mist")),
    "gig": (("guitar",), ("stage",), ("crowd", "audience"), ("microphone", "mic"), ("spotlight",)),
    "garden": (("tulip",), ("lawn", "grass"), ("wheelbarrow",), ("shed",), ("bees", "bumblebee")),
    "birthday": (("cake", "gateau"), ("candles",), ("balloons",), ("presents", "gifts"), ("party hat",)),
    "commute": (("tram", "streetcar"), ("platform",), ("bicycle", "bike", "cycle"), ("umbrella",), ("rain",)),
    "museum": (("sculpture", "statue"), ("painting", "canvas"), ("gallery",), ("exhibit",)),
    "beach": (("sand",), ("sunscreen", "sunblock"), ("waves", "swell"), ("sandcastle",), ("kite",)),
}
FILLER_TAGS = ("favourite", "throwback", "weekend", "family")  # owners put these on anything
PEOPLE_THEMES = {"birthday": 0.9, "gig": 0.5, "beach": 0.6, "hiking": 0.5, "cooking": 0.4}  # else 0.2: P(faces)

OPENERS = ("Finally got round to", "Quick snap of", "Can't get over", "Sunday morning and", "No filter needed for",
           "Still thinking about", "Just", "Throwing it back to")
CLOSERS = ("again", "before it got dark", "with everyone", "on the way home", "all afternoon", "— what a day", "")
MOODS = {"cooking": ("messy", "delicious", "homemade"), "sailing": ("breezy", "salty", "calm"),
         "hiking": ("steep", "muddy", "exhausting"), "gig": ("loud", "electric", "sweaty"),
         "garden": ("blooming", "sunny", "overgrown"), "birthday": ("cheerful", "noisy", "sweet"),
         "commute": ("grey", "crowded", "early"), "museum": ("quiet", "huge", "ancient"),
         "beach": ("golden", "windy", "lazy")}


class ApartWorld:
    """The fixed part of a world: owners, their households and name preferences, and the look of everything."""

    def __init__(self, *, seed: int = 101, dim: int = 384, face_dim: int = 128, owners: int = 6,
                 household: tuple[int, int] = (3, 6), name_overlap: float = 0.5, noise: float = 1.0,
                 face_noise: float = 0.45, latent_dim: int = 40, face_consent: float = 0.7) -> None:
        rng = np.random.default_rng(seed)
        self.dim, self.face_dim, self.noise, self.face_noise, self.consent_rate = (dim, face_dim, noise, face_noise,
                                                                                   face_consent)
        self.themes = sorted(THEMES)
        share = 1 / np.arange(1, len(self.themes) + 1) ** 0.9
        self.theme_weights = rng.permutation(share / share.sum())
        self.concepts = sorted({names for concepts in THEMES.values() for names in concepts})
        self.theme_latent = {theme: rng.normal(size=latent_dim) for theme in self.themes}
        concept_latent = {names: rng.normal(size=latent_dim) for names in self.concepts}
        own = np.sqrt(1 - name_overlap ** 2)
        self.name_latent = {name: name_overlap * concept_latent[names] + own * rng.normal(size=latent_dim)
                            for names in self.concepts for name in names}
        self.owners = [f"member-{k:02d}" for k in range(owners)]
        self.camera = {owner: 0.5 * rng.normal(size=latent_dim) for owner in self.owners}
        self.preferred = {(owner, names): int(rng.integers(len(names))) for owner in self.owners
                          for names in self.concepts}
        self.mix_in = rng.normal(size=(latent_dim, dim)) / np.sqrt(latent_dim)
        self.mix_out = rng.normal(size=(dim, dim)) / np.sqrt(dim)
        self.offset = _unit(rng.normal(size=dim))  # about the norm of the varying part: a cone, not a sphere
        falling = 1 / np.sqrt(np.arange(1, dim + 1))
        self.noise_scale = rng.permutation(falling / np.sqrt((falling ** 2).mean()))  # mean square 1
        self.pose_axes = np.linalg.qr(rng.normal(size=(face_dim, 4)))[0].T
        self.households: dict[str, list[int]] = {}
        self.person_vectors: list[np.ndarray] = []
        self.person_weights: dict[str, np.ndarray] = {}
        for owner in self.owners:
            family = rng.normal(size=face_dim)
            size = int(rng.integers(household[0], household[1] + 1))
            members = []
            for _ in range(size):
                members.append(len(self.person_vectors))
                self.person_vectors.append(_unit(0.35 * _unit(family) + _unit(rng.normal(size=face_dim))))
            self.households[owner] = members
            weights = 1 / np.arange(1, size + 1) ** 1.2
            self.person_weights[owner] = rng.permutation(weights / weights.sum())

    @property
    def people(self) -> int:
        return len(self.person_vectors)

    @property
    def synonym_groups(self) -> list[tuple[str, ...]]:
        return [names for names in self.concepts if len(names) > 1]

    @staticmethod
    def vocabulary(theme: str) -> set[str]:
        """Every name of the theme's concepts: what counts as a right tag for one of its images."""
        return {name for names in THEMES[theme] for name in names}

    def library(self, size: int, *, seed: int) -> SyntheticLibrary:
        rng = np.random.default_rng(seed)
        start = datetime(2025, 6, 1, tzinfo=timezone.utc)
        events, truth = [], {}
        for k in range(size):
            image_id = f"photo-{seed}-{k:05d}"
            event, image_truth = self._event(rng, image_id, f"evt-{seed}-{k:05d}", start + timedelta(seconds=97 * k))
            events.append(event)
            truth[image_id] = image_truth
        return SyntheticLibrary(events=events, truth=truth, secrets=frozenset())

    def _event(self, rng: np.random.Generator, image_id: str, event_id: str,
               when: datetime) -> tuple[dict, ImageTruth]:
        owner = self.owners[int(rng.integers(len(self.owners)))]
        theme = self.themes[int(rng.choice(len(self.themes), p=self.theme_weights))]
        concepts = THEMES[theme]
        popularity = 1 / np.arange(1, len(concepts) + 1)
        shown = rng.choice(len(concepts), size=int(rng.integers(2, min(4, len(concepts)) + 1)), replace=False,
                           p=popularity / popularity.sum())
        latent = self.theme_latent[theme] + self.camera[owner] + 0.3 * rng.normal(size=len(self.camera[owner]))
        tags: list[str] = []
        caption_names: list[str] = []
        for row in shown:
            names = concepts[row]
            name = names[self.preferred[(owner, names)]] if rng.random() < 0.75 else names[rng.integers(len(names))]
            latent = latent + 0.8 * self.name_latent[name]
            if rng.random() < 0.8:
                tags.append(name)
                if len(names) > 1 and rng.random() < 0.06:
                    tags.append(names[(names.index(name) + 1) % len(names)])  # some people write both
            caption_names.append(names[rng.integers(len(names))])
        if rng.random() < 0.15:
            tags.append(FILLER_TAGS[int(rng.integers(len(FILLER_TAGS)))])
        look = self.mix_out @ np.tanh(latent @ self.mix_in / 2) / np.sqrt(self.dim) + self.offset
        embedding = look + self.noise * self.noise_scale * rng.normal(size=self.dim) / np.sqrt(self.dim)
        persons = self._persons(rng, owner, theme)
        consent = bool(rng.random() < self.consent_rate)
        event = {
            "schema": "image.v1", "event_id": event_id, "ts": when.isoformat(), "user_id": owner,
            "image_id": image_id, "tags": list(dict.fromkeys(tags)),
            "embedding": [round(float(v), 5) for v in embedding],
            "faces": [{"embedding": self._face(rng, person), "box": [float(k * 90), 40.0, 80.0, 80.0]}
                      for k, person in enumerate(persons)],
            "exif": {"Make": "Vireo", "FNumber": [28, 10], "ISO": int(rng.choice([100, 200, 800]))},
            "consent": {"training": True, "faces": consent},
        }
        if rng.random() < 0.85:
            event["caption"] = self._caption(rng, theme, caption_names)
        if rng.random() < 0.9:
            event["category"] = theme
        return event, ImageTruth(owner=owner, category=theme, persons=persons, face_consent=consent)

    def _caption(self, rng: np.random.Generator, theme: str, names: list[str]) -> str:
        words = [OPENERS[int(rng.integers(len(OPENERS)))], "the" if rng.random() < 0.5 else "this",
                 MOODS[theme][int(rng.integers(3))], names[int(rng.integers(len(names)))]]
        if len(names) > 1 and rng.random() < 0.5:
            words += ["and", names[int(rng.integers(len(names)))]]
        return " ".join(words + [CLOSERS[int(rng.integers(len(CLOSERS)))]]).strip()

    def _persons(self, rng: np.random.Generator, owner: str, theme: str) -> tuple[int, ...]:
        if rng.random() >= PEOPLE_THEMES.get(theme, 0.2):
            return ()
        household = self.households[owner]
        count = min(int(rng.choice([1, 2, 3, 4], p=[0.45, 0.3, 0.15, 0.1])), len(household))
        chosen = rng.choice(len(household), size=count, replace=False, p=self.person_weights[owner])
        persons = [household[k] for k in chosen]
        if rng.random() < 0.15:
            persons.append(self.people + int(rng.integers(10**9)))  # a stranger in the background, seen once
        return tuple(persons)

    def _face(self, rng: np.random.Generator, person: int) -> list[float]:
        identity = self.person_vectors[person] if person < self.people else _unit(rng.normal(size=self.face_dim))
        pose = rng.normal(size=len(self.pose_axes)) @ self.pose_axes * 0.25
        vector = identity + pose + self.face_noise * rng.normal(size=self.face_dim) / np.sqrt(self.face_dim)
        return [round(float(v), 5) for v in vector]


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def apart_samples(library: SyntheticLibrary) -> list[dict]:
    """image.sample.v1 dicts as the anonymizer writes them (captions here name no one, so text passes unchanged)."""
    return [anonymize_image_event(event, anonymize_text=lambda text, _: text, pseudonymize=stand_in_pseudonymize)
            for event in library.events]
