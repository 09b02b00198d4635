"""A third synthetic photo library (image.v1), written blind: without reading the image model, its trainer or the
other two generators' vocabularies and embeddings, so the model can be scored once on data nobody tuned it on.

How it differs from the other generators, and what each knob of BlindWorld does:
- Its own eight themes (pets, wedding, building site, ski trip, farm, office, concert in the park, kids' soccer)
  with unequal sizes, and concepts named several ways: spellings (grey/gray), British/American words (digger,
  lorry, wellies), singular/plural, abbreviations (mtg, hi-vis), brand names (JCB, John Deere, MacBook).
- A concept has no direction of its own name: its look is a mixture of sub-modes (a dog indoors, in snow, at the
  vet), some borrowing another theme's look; a name leans towards some sub-modes (near-synonyms such as ewe and
  lamb), so the names of one concept have different embedding centroids. `latent_dim` sizes the hidden scene space,
  `dim` (256-768 intended) the embedding it is warped into (a random projection and a tanh); `noise` scales
  heavy-tailed (Student-t) scene noise; `outliers` is the share of images (screenshots, blur) whose embedding
  shows nothing of their theme. Each owner shoots some themes far more than others, with a look of its own.
- Tags are noisy: each owner tags sparsely, typically or heavily (`tagging`: the shares of each style), mostly with
  their own preferred name of a concept (`name_loyalty`), adds generic tags (favourites, iphone, 2021) and
  misspells some (`typo_rate`; a misspelling belongs to no vocabulary or synonym group). `caption_rate` and
  `category_rate` say how often a caption or an album category is given.
- People: each owner's household (`household` sizes, 20+ people in the default world, never shared between owners)
  is photographed unequally (Zipf weights), up to five faces per image, strangers among them; relatives share a
  family face (`family_resemblance`), two of each household look alike, and every face drifts over the years the
  library spans (`years`, `face_drift`), with `face_noise` per photo and an occasional blurred face.
  `face_consent` is the share of images whose faces may be used.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np

from consumers.image_anon import anonymize_image_event, normalize_tag
from tests.image_synth import ImageTruth, SyntheticLibrary, stand_in_pseudonymize

# theme -> concepts, a concept being all its names; no name belongs to two concepts (checked below).
THEMES: dict[str, tuple[tuple[str, ...], ...]] = {
    "pets": (
        ("dog", "dogs", "hound", "doggo"), ("puppy", "puppies", "pup"), ("cat", "cats", "kitty", "moggy"),
        ("vet", "vets", "veterinarian", "animal hospital"), ("leash", "lead", "dog lead"),
        ("grey fur", "gray fur"), ("treats", "dog treats", "Milk-Bone"), ("litter box", "litter tray"),
    ),
    "wedding": (
        ("bride", "brides"), ("groom", "bridegroom"), ("ceremony", "vows"),
        ("reception", "wedding breakfast", "wedding party"), ("wedding cake", "tiered cake"),
        ("rings", "ring", "wedding band", "wedding bands"), ("confetti",), ("bouquet", "posy", "flowers"),
    ),
    "building site": (
        ("excavator", "digger", "JCB", "backhoe"), ("crane", "tower crane", "cranes"),
        ("scaffolding", "scaffold", "scaffolds"), ("hard hat", "hardhat", "hard hats", "safety helmet"),
        ("concrete", "cement", "concrete pour"), ("dump truck", "tipper lorry", "tipper"),
        ("hi-vis", "high-vis", "hi-viz", "safety vest"),
    ),
    "ski trip": (
        ("chairlift", "chair lift", "ski lift"), ("snowboard", "snowboarding", "snowboards"),
        ("piste", "slope", "ski run", "pistes"), ("goggles", "ski goggles", "Oakley"),
        ("apres-ski", "après-ski", "apres ski"), ("powder", "fresh snow", "snow"), ("ski boots", "ski boot"),
    ),
    "farm": (
        ("tractor", "tractors", "John Deere"), ("sheep", "ewe", "lamb", "lambs"), ("hay bales", "hay", "haybale"),
        ("barn", "barns", "byre"), ("chickens", "chicken", "hens", "chooks"),
        ("wellies", "wellingtons", "rain boots", "gumboots"), ("paddock", "pasture", "field"),
    ),
    "office": (
        ("laptop", "notebook", "MacBook"), ("whiteboard", "white board", "dry-erase board"),
        ("meeting", "meetings", "mtg", "standup"), ("coffee", "flat white", "espresso"),
        ("desk", "desks", "workstation"), ("elevator", "lift"), ("colleagues", "coworkers", "co-workers", "team"),
        ("post-its", "post-it", "sticky notes"),
    ),
    "concert in the park": (
        ("stage", "bandstand"), ("crowd", "audience", "crowds"), ("picnic blanket", "picnic rug", "blanket"),
        ("guitar", "guitars", "Fender", "acoustic guitar"), ("fireworks", "firework"),
        ("festival", "fest", "open-air"), ("food truck", "food van", "food trucks"),
    ),
    "kids soccer": (
        ("soccer", "football", "footy"), ("goal", "goalpost", "goal posts"), ("jersey", "kit", "strip"),
        ("trophy", "trophies", "cup"), ("cleats", "football boots", "studs"), ("sideline", "touchline"),
        ("orange slices", "half-time oranges"),
    ),
}
THEME_SIZES = {"pets": 5.0, "wedding": 1.5, "building site": 1.0, "ski trip": 1.2, "farm": 2.0, "office": 2.5,
               "concert in the park": 1.0, "kids soccer": 1.8}  # unequal categories
# How many faces a theme's photos tend to show (a Poisson mean), and the share of them that are strangers.
THEME_FACES = {"pets": (0.8, 0.05), "wedding": (3.0, 0.5), "building site": (0.7, 0.6), "ski trip": (1.5, 0.3),
               "farm": (0.9, 0.2), "office": (1.5, 0.8), "concert in the park": (2.2, 0.5), "kids soccer": (2.0, 0.5)}
# Words an owner writes about a theme's photos that name none of its concepts, and how concept names join them.
CAPTION_PHRASES = {
    "pets": ("walkies", "sofa time", "good boy", "new family member", "who's a sleepy one"),
    "wedding": ("the big day", "so happy for them", "first dance", "Saturday's do", "just married"),
    "building site": ("week 12 progress", "foundations done", "site visit", "handover soon"),
    "ski trip": ("bluebird day", "first run of the season", "Chamonix", "last day on the mountain"),
    "farm": ("muddy morning", "lambing season", "up at 5", "open farm Sunday"),
    "office": ("all hands", "quarter end", "new starter's first day", "hot desking again"),
    "concert in the park": ("summer sounds", "sunset set", "free gig in the park", "what a night"),
    "kids soccer": ("match day", "under-9s", "cup final", "muddy Saturday"),
}
CAPTION_FORMS = ("{phrase}", "{phrase}, {0}", "{0} and {1}", "{phrase}: {0} and {1}", "{0}!", "{0} again")
GENERIC_TAGS = ("favourites", "favorites", "iphone", "2021", "2023", "weekend", "family", "best", "todo", "IMG",
                "edited", "shared")
CAMERAS = (("Apple", "iPhone 12"), ("Apple", "iPhone 14 Pro"), ("samsung", "SM-G991B"), ("Google", "Pixel 7"),
           ("Canon", "EOS R6"), ("FUJIFILM", "X-T30"))
EPOCH = datetime(2019, 3, 1, tzinfo=timezone.utc)
TAG_STYLES = ("sparse", "typical", "heavy")


def _all_names() -> list[str]:
    names = [normalize_tag(name) for concepts in THEMES.values() for concept in concepts for name in concept]
    if len(names) != len(set(names)) or set(names) & {normalize_tag(tag) for tag in GENERIC_TAGS}:
        raise ValueError("a tag name belongs to two concepts")
    return names


KNOWN_NAMES = frozenset(_all_names())


class BlindWorld:
    """The fixed part of a world: owners, their households, tagging habits and name preferences, and the look of
    every concept and face. library() draws images from it."""

    def __init__(self, *, seed: int = 2311, dim: int = 512, face_dim: int = 128, owners: int = 6,
                 household: tuple[int, int] = (4, 7), name_loyalty: float = 0.75, noise: float = 1.0,
                 face_noise: float = 0.4, latent_dim: int = 48, face_consent: float = 0.7, outliers: float = 0.03,
                 typo_rate: float = 0.06, tagging: tuple[float, float, float] = (0.3, 0.45, 0.25),
                 caption_rate: float = 0.55, category_rate: float = 0.8, family_resemblance: float = 0.55,
                 face_drift: float = 0.35, years: float = 5.0) -> None:
        rng = np.random.default_rng(seed)
        self.seed, self.dim, self.face_dim, self.noise, self.face_noise = seed, dim, face_dim, noise, face_noise
        self.face_consent, self.outliers, self.typo_rate, self.years = face_consent, outliers, typo_rate, years
        self.name_loyalty, self.caption_rate, self.category_rate = name_loyalty, caption_rate, category_rate
        self.face_drift = face_drift
        self.themes = list(THEMES)
        self._theme_centres = rng.normal(0.0, 1.0, (len(self.themes), latent_dim)) * 1.6
        # Each concept: 1-3 sub-modes, each its own latent offset, a third of them drawn towards another theme.
        self._submodes: dict[tuple[int, int], np.ndarray] = {}
        self._name_lean: dict[tuple[int, int], np.ndarray] = {}  # name x sub-mode weights (near-synonyms)
        for t, theme in enumerate(self.themes):
            for c, names in enumerate(THEMES[theme]):
                count = int(rng.integers(1, 4))
                base = rng.normal(0.0, 1.0, latent_dim)
                modes = base + rng.normal(0.0, 0.8, (count, latent_dim))
                for m in range(count):
                    if rng.random() < 0.33:
                        other = int(rng.choice([i for i in range(len(self.themes)) if i != t]))
                        modes[m] += 0.6 * (self._theme_centres[other] - self._theme_centres[t])
                self._submodes[t, c] = modes
                self._name_lean[t, c] = rng.dirichlet(np.full(count, 0.6), size=len(names))
        self._projection = rng.normal(0.0, 1.0, (latent_dim, dim)) / np.sqrt(latent_dim)
        self._outlier_mode = rng.normal(0.0, 1.0, dim)
        self.owners = [f"blind-owner-{seed}-{index}" for index in range(owners)]
        self._owner_weight = rng.dirichlet(np.full(owners, 1.2))  # some owners shoot far more than others
        self._owner_themes = {owner: rng.dirichlet(np.full(len(self.themes), 0.5)) * list(THEME_SIZES.values())
                              for owner in self.owners}
        self._owner_style = {owner: rng.normal(0.0, 0.35, latent_dim) for owner in self.owners}  # camera, habits
        self._owner_camera = {owner: CAMERAS[int(rng.integers(len(CAMERAS)))] for owner in self.owners}
        self._owner_tagging = {owner: TAG_STYLES[int(rng.choice(3, p=np.asarray(tagging) / sum(tagging)))]
                               for owner in self.owners}
        self._owner_names = {owner: {key: int(rng.integers(len(THEMES[self.themes[key[0]]][key[1]])))
                                     for key in self._submodes} for owner in self.owners}
        # People: a family face per household, relatives around it, two who look alike, a drift per person.
        self._household: dict[str, list[int]] = {}
        self._person_weight: dict[str, np.ndarray] = {}
        faces, drifts = [], []
        for owner in self.owners:
            size = int(rng.integers(household[0], household[1] + 1))
            family = rng.normal(0.0, 1.0, face_dim)
            own = rng.normal(0.0, 1.0, (size, face_dim))
            members = family_resemblance * family + np.sqrt(1.0 - family_resemblance ** 2) * own
            if size >= 2:
                members[1] = 0.75 * members[0] + 0.66 * own[1]  # a look-alike sibling
            self._household[owner] = list(range(len(faces), len(faces) + size))
            self._person_weight[owner] = 1.0 / np.arange(1, size + 1) ** 1.1
            rng.shuffle(self._person_weight[owner])
            faces.extend(member / np.linalg.norm(member) for member in members)
            drifts.extend(rng.normal(0.0, 1.0, (size, face_dim)) / np.sqrt(face_dim))
        self._faces, self._drifts = np.asarray(faces), np.asarray(drifts)

    @property
    def people(self) -> int:
        return len(self._faces)

    @property
    def synonym_groups(self) -> list[tuple[str, ...]]:
        """Every concept with more than one name, its names as the anonymizer normalizes tags."""
        return [tuple(normalize_tag(name) for name in names)
                for concepts in THEMES.values() for names in concepts if len(names) > 1]

    @staticmethod
    def vocabulary(theme: str) -> set[str]:
        """Every name of the theme's concepts: what counts as a right tag for one of its images."""
        return {normalize_tag(name) for names in THEMES[theme] for name in names}

    def library(self, size: int, *, seed: int) -> SyntheticLibrary:
        rng = np.random.default_rng([self.seed, seed])
        events, truth = [], {}
        strangers = iter(range(10_000_000 + 100_000 * seed, 10_000_000 + 100_000 * (seed + 1)))
        for index in range(size):
            image_id = f"blind-{seed}-{index:05d}"
            event, fact = self._event(rng, image_id, f"blind-ev-{self.seed}-{seed}-{index}", strangers)
            events.append(event)
            truth[image_id] = fact
        return SyntheticLibrary(events=events, truth=truth, secrets=frozenset(self.owners))

    def _event(self, rng: np.random.Generator, image_id: str, event_id: str, strangers) -> tuple[dict, ImageTruth]:
        owner = self.owners[int(rng.choice(len(self.owners), p=self._owner_weight))]
        weights = self._owner_themes[owner]
        t = int(rng.choice(len(self.themes), p=weights / weights.sum()))
        theme = self.themes[t]
        when = EPOCH + timedelta(days=float(rng.uniform(0.0, 365.25 * self.years)))
        concepts = self._concepts(rng, t)
        modes = {c: int(rng.integers(len(self._submodes[t, c]))) for c in concepts}
        event: dict = {
            "schema": "image.v1", "event_id": event_id, "ts": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "user_id": owner, "image_id": image_id, "embedding": self._embedding(rng, owner, t, modes),
            "consent": {"training": True, "faces": bool(rng.random() < self.face_consent)},
            "exif": {"Make": self._owner_camera[owner][0], "Model": self._owner_camera[owner][1]},
        }
        names = {c: self._name(rng, owner, t, c, modes[c]) for c in concepts}
        tags = self._tags(rng, owner, t, names)
        if tags:
            event["tags"] = tags
        if rng.random() < self.caption_rate:
            event["caption"] = self._caption(rng, theme, names)
        if rng.random() < self.category_rate:
            event["category"] = theme
        persons = self._persons(rng, owner, theme, strangers)
        if persons:
            progress = (when - EPOCH).days / (365.25 * self.years)
            event["faces"] = [{"embedding": self._face(rng, person, progress), "box": self._box(rng)}
                              for person in persons]
        return event, ImageTruth(owner=owner, category=theme, persons=persons,
                                 face_consent=event["consent"]["faces"])

    def _concepts(self, rng: np.random.Generator, t: int) -> list[int]:
        count = len(THEMES[self.themes[t]])
        popularity = 1.0 / np.arange(1, count + 1) ** 0.8  # the first concepts of a theme are the commonest
        shown = min(count, 1 + int(rng.poisson(1.2)))
        return [int(c) for c in rng.choice(count, size=shown, replace=False, p=popularity / popularity.sum())]

    def _embedding(self, rng: np.random.Generator, owner: str, t: int, modes: dict[int, int]) -> list[float]:
        if rng.random() < self.outliers:
            vector = self._outlier_mode + rng.normal(0.0, 1.5, self.dim)
        else:
            latent = self._theme_centres[t] + self._owner_style[owner]
            for c, m in modes.items():
                latent = latent + rng.uniform(0.5, 1.2) * self._submodes[t, c][m]
            latent = latent + self.noise * 0.5 * rng.standard_t(3, size=latent.shape)
            vector = np.tanh(0.5 * latent @ self._projection) + rng.normal(0.0, 0.05, self.dim)
        return [round(float(x), 5) for x in vector / np.linalg.norm(vector)]

    def _name(self, rng: np.random.Generator, owner: str, t: int, c: int, mode: int) -> str:
        names = THEMES[self.themes[t]][c]
        if rng.random() < self.name_loyalty:
            return names[self._owner_names[owner][t, c]]
        lean = self._name_lean[t, c][:, mode]
        return names[int(rng.choice(len(names), p=lean / lean.sum()))]

    def _tags(self, rng: np.random.Generator, owner: str, t: int, names: dict[int, str]) -> list[str]:
        style = self._owner_tagging[owner]
        chosen = list(names.values())
        if style == "sparse":
            chosen = chosen[:1] if rng.random() < 0.4 else []
        elif style == "heavy":  # several names of one concept, generic tags, some in capitals
            for c in names:
                if rng.random() < 0.5:
                    chosen.append(str(rng.choice(THEMES[self.themes[t]][c])))
            chosen += [str(tag) for tag in rng.choice(GENERIC_TAGS, size=int(rng.integers(1, 4)), replace=False)]
            chosen = [tag.title() if rng.random() < 0.2 else tag for tag in chosen]
        elif rng.random() < 0.25:
            chosen.append(str(rng.choice(GENERIC_TAGS)))
        tags = [self._typo(rng, tag) if rng.random() < self.typo_rate else tag for tag in chosen]
        unique: dict[str, str] = {}  # "Dog" and "dog" once
        for tag in tags:
            unique.setdefault(normalize_tag(tag), tag)
        return list(unique.values())

    @staticmethod
    def _typo(rng: np.random.Generator, tag: str) -> str:
        """A dropped, doubled or swapped letter that spells no known name."""
        for _ in range(5):
            i = int(rng.integers(1, len(tag))) if len(tag) > 2 else 0
            kind = int(rng.integers(3))
            typo = (tag[:i] + tag[i + 1:], tag[:i] + tag[i] + tag[i:], tag[:i - 1] + tag[i] + tag[i - 1] + tag[i + 1:]
                    if i else tag)[kind]
            if typo != tag and normalize_tag(typo) not in KNOWN_NAMES:
                return typo
        return tag

    def _caption(self, rng: np.random.Generator, theme: str, names: dict[int, str]) -> str:
        if rng.random() < 0.15:
            return f"IMG_{int(rng.integers(1000, 9999))}"  # a camera's file name left as the caption
        words = [str(name) for name in rng.permutation(list(names.values()))]
        phrase = str(rng.choice(CAPTION_PHRASES[theme]))
        return str(rng.choice(CAPTION_FORMS)).format(*words, phrase, phrase=phrase)

    def _persons(self, rng: np.random.Generator, owner: str, theme: str, strangers) -> tuple[int, ...]:
        mean, stranger_share = THEME_FACES[theme]
        count = min(5, int(rng.poisson(mean)))
        household, weight = self._household[owner], self._person_weight[owner]
        persons: list[int] = []
        for _ in range(count):
            if rng.random() < stranger_share:
                persons.append(next(strangers))
                continue
            free = [i for i, person in enumerate(household) if person not in persons]
            if free:
                w = weight[free]
                persons.append(household[free[int(rng.choice(len(free), p=w / w.sum()))]])
        return tuple(persons)

    def _face(self, rng: np.random.Generator, person: int, progress: float) -> list[float]:
        if person < self.people:
            face = self._faces[person] + self.face_drift * progress * self._drifts[person]
        else:  # a stranger: a face of its own, seen once
            face = rng.normal(0.0, 1.0, self.face_dim) / np.sqrt(self.face_dim)
        blur = 2.5 if rng.random() < 0.05 else 1.0
        face = face / np.linalg.norm(face) + blur * self.face_noise * rng.normal(0.0, 1.0, self.face_dim) / np.sqrt(
            self.face_dim)
        return [round(float(x), 5) for x in face / np.linalg.norm(face)]

    @staticmethod
    def _box(rng: np.random.Generator) -> list[float]:
        w = float(rng.uniform(0.05, 0.4))
        return [round(float(rng.uniform(0.0, 1.0 - w)), 4), round(float(rng.uniform(0.0, 1.0 - w)), 4),
                round(w, 4), round(w * float(rng.uniform(1.0, 1.4)), 4)]


def blind_samples(library: SyntheticLibrary) -> list[dict]:
    """image.sample.v1 dicts as the anonymizer writes them (captions here name no one, so text passes unchanged)."""
    return [anonymize_image_event(event, anonymize_text=lambda text, conversation: text,
                                  pseudonymize=stand_in_pseudonymize) for event in library.events]
