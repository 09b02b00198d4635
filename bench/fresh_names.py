"""Unseen names in fresh message templates, split into a dev set and a held-out set (issue 18).

Names come from two public name lists that no detector list is built from (the gazetteer is Faker's):
given names from nam_dict.txt (Jörg Michael's international first-name dictionary, shipped in the PyPI package
gender-guesser 0.4.0, GNU FDL) and family names from the 1990 US Census list (shipped in the PyPI package
names 0.3.0). Every name that the gazetteer, the surname list or the English word list holds is subtracted;
what is left is split in two by a hash of the name, so the dev set and the held-out set share no name.

The templates below were written for this bench in session 11, not taken from bench/pii_corpus.py. Detector
rules may be looked at and changed against DEV_TEMPLATES and the dev names; HELD_OUT_TEMPLATES and the held-out
names are only ever scored (they were written, committed and scored once before any rule was changed for
them). Both sets mix in messages with no name at all, typed the way people type (slang, missing apostrophes,
typos), so the keep rate says what an eager lower-case rule costs.

{P} is a given name, {F} a family name; {P} {F} is one PERSON entity.
"""

from __future__ import annotations

import hashlib
import random
import re
from functools import cache
from importlib.util import find_spec
from pathlib import Path

from bench.pii_corpus import Entity, Message
from learnstream.pii.lexicon import fold, load_lexicon

DEV_TEMPLATES = (
    "{P} wont answer my calls",
    "ugh {P} again",
    "{P}: you ok?",
    "spent the day with {P} and the kids",
    "{P} {F} from the council rang",
    "been thinking about {P} a lot",
    "its been a year since {P} passed",
    "lost touch with {P} after school",
    "{P} thinks im overreacting",
    "honestly {P} is the only one who gets it",
    "going to see {P} tomorrow",
    "did {P} ever call back",
    "{P} n me broke up",
    "so yeah {P} left",
    "{P} is pregnant and i dont know how to feel",
    "found out {P} lied about everything",
    "my mate {P} reckons i need a break",
    "{P} shouted at me in front of everyone",
    "hi, {P} here",
    "without {P} id be lost",
    "{P} {F} moved in next door",
    "{P} took the dog when she left",
    "cried on {P} for ages",
    "was at {P}s house all weekend",
    "{P} hasnt eaten properly in days",
    # no name: what a lower-case rule must leave alone
    "ive been so knackered lately",
    "nothing helps, everything feels pointless atm",
    "dunno why i bother tbh",
    "the new tablets make me dizzy af",
    "skipped uni again, couldnt face it",
    "slept til 3pm, feel gross",
    "my flatmates are driving me mad w the noise",
)

HELD_OUT_TEMPLATES = (
    "{P} said shed pick me up but never showed",
    "cant stop thinking about {P} tbh",
    "me n {P} used to be so close",
    "{P} {F} is my social worker now",
    "ok so {P} texted me at like 2am again",
    "did i tell u about {P}? she moved out last week",
    "miss {P} so much it hurts",
    "the only person who checks on me is {P}",
    "{P}'s mum rang the school about the bullying",
    "sat with {P} in the car for an hour just crying",
    "hey its {P}, sorry i missed last week",
    "{P} and {P} both think i should take the job",
    "every time {P} drinks it gets scary",
    "still waiting for {P} to apologise",
    "my counsellor {P} {F} is off sick so no session",
    "went round {P}'s after work, felt a bit better",
    "{P} keeps saying its my fault",
    "no one except {P} knows about the tablets",
    "i owe {P} like 200 quid and its stressing me out",
    "{P} wants custody of the kids now",
    "anyway {P} is coming over tonight",
    "this is {P} btw, the one with the sleep problems",
    "talked to {P} {F} at the food bank, she was lovely",
    "why does {P} always do this",
    "{P} blocked me on everything",
    "i think {P} is cheating on me",
    "{P} got me through the worst of it last year",
    "havent heard from {P} since the funeral",
    "tell {P} i said thanks if you see her",
    # no name
    "sooo tired today, barely slept again ngl",
    "work was rubbish, boss kept having a go at everyone",
    "idk if the meds r helping tbh, feel kinda numb",
    "lowkey scared of the appointment on thurs",
    "omw home now, the bus was rammed",
    "cant be bothered with anything rn",
    "been journalling like u said, it helps a bit",
    "my anxietys through the roof, heart racing",
)


def _package_file(package: str, name: str) -> Path:
    spec = find_spec(package)
    if spec is None or spec.origin is None:
        raise ImportError(f"bench needs the PyPI package for {package!r} (the bench extra)")
    return Path(spec.origin).parent / name


def _split(name: str) -> str:
    return "dev" if hashlib.sha256(name.encode()).digest()[0] % 2 == 0 else "held_out"


@cache
def name_lists() -> dict[str, dict[str, tuple[str, ...]]]:
    """{"dev" | "held_out": {"given": ..., "family": ...}}: names of the two lists that no gazetteer, surname
    or English word list holds, casefolded, split by hash."""
    lexicon = load_lexicon()
    known = lexicon.given_names | lexicon.surnames | lexicon.common_words
    given: set[str] = set()
    for line in _package_file("gender_guesser", "data/nam_dict.txt").read_text(encoding="utf-8").splitlines():
        if line[:1] in ("#", "=", "") or len(line) < 31:
            continue
        name = line.split()[1]
        frequencies = [int(c, 16) for c in line[30:85] if c.strip() and c in "0123456789abcdefABCDEF"]
        # Names that are common somewhere (frequency 3+ on the dictionary's 1-13 scale in some country).
        if re.fullmatch(r"[A-Za-z]{3,}", name) and frequencies and max(frequencies) >= 3:
            given.add(name.casefold())
    family: set[str] = set()
    for rank, line in enumerate(_package_file("names", "dist.all.last").read_text(encoding="ascii").splitlines()):
        name = line.split()[0].casefold()
        if rank < 30000 and re.fullmatch(r"[a-z]{3,}", name):
            family.add(name)
    lists: dict[str, dict[str, list[str]]] = {"dev": {"given": [], "family": []}, "held_out": {"given": [], "family": []}}
    for kind, names in (("given", given), ("family", family)):
        for name in sorted(names):
            if fold(name) not in known:
                lists[_split(name)][kind].append(name)
    return {split: {kind: tuple(names) for kind, names in kinds.items()} for split, kinds in lists.items()}


def fresh_names(count: int, *, split: str, seed: int = 17, lower_share: float = 0.5) -> list[Message]:
    """count labelled messages of the split's templates and names; lower_share of them typed all in lower case,
    the rest with names capitalised (the templates' own words are as written)."""
    templates = {"dev": DEV_TEMPLATES, "held_out": HELD_OUT_TEMPLATES}[split]
    names = name_lists()[split]
    rng = random.Random(seed)
    messages = []
    for number in range(count):
        lower = rng.random() < lower_share
        pieces, entities, cursor = [], [], 0
        template = rng.choice(templates)
        for match in re.finditer(r"\{P\}(?: \{F\})?|[^{]+", template):
            piece = match.group()
            if piece.startswith("{P}"):
                piece = " ".join(
                    rng.choice(names["given" if slot == "{P}" else "family"]).title() for slot in piece.split()
                )
                piece = piece.lower() if lower else piece
                entities.append(Entity(cursor, cursor + len(piece), "PERSON", True))
            pieces.append(piece)
            cursor += len(piece)
        messages.append(Message("".join(pieces), f"fconv-{split}-{number // 4}", tuple(entities), lower))
    return messages


def name_counts() -> dict[str, int]:
    """How many names of each kind each split holds, after the subtraction."""
    return {f"{split}_{kind}": len(names) for split, kinds in name_lists().items() for kind, names in kinds.items()}
