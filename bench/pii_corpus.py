"""Labelled synthetic therapy-chat corpus for the anonymizer bench.

Every message knows where its personal data is (character spans with a type) and which names came
from Faker locales the gazetteer was built from (learnstream.pii.lexicon.GAZETTEER_LOCALES) and which from
locales it never saw (HELD_OUT_LOCALES, keeping only names absent from the gazetteer), so the bench can
report both. Near-miss negatives (weekdays, "NHS", "CBT", "GP", drug doses, scores, years, times) sit in
the text around them. Casing varies: some messages are typed all in lower case.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import date

from faker import Faker

from learnstream.pii.lexicon import GAZETTEER_LOCALES, fold, load_lexicon

HELD_OUT_LOCALES = ("fi_FI", "hu_HU", "id_ID", "zu_ZA", "en_TH", "ro_RO", "cs_CZ", "tw_GH", "fr_DZ", "sv_SE", "lt_LT")
NAME_TYPES = frozenset({"PERSON", "LOCATION", "ORGANIZATION"})


@dataclass(frozen=True)
class Entity:
    start: int
    end: int
    label: str
    held_out: bool  # a name from a locale (and a word) the gazetteer never saw


@dataclass(frozen=True)
class Message:
    text: str
    conversation: str
    entities: tuple[Entity, ...]
    lower_case: bool


# {SLOT} is filled by the generator of that type; the rest of the words are not PII and must be kept.
TEMPLATES = (
    "My sister {PERSON} keeps telling me to call the GP about my anxiety.",
    "Honestly I don't know, {PERSON} said I should try CBT again but the NHS waiting list is months long.",
    "I had a row with my husband {PERSON} on Monday and I couldn't sleep until 3am.",
    "{PERSON} from work has been really supportive since the panic attacks started in March.",
    "Dr {PERSON} upped my sertraline to 100mg last Tuesday.",
    "I told {PERSON} about the self-harm and she didn't judge me at all.",
    "We moved to {LOCATION} in 2019 and I still don't know anyone there.",
    "I grew up in {LOCATION} but my mum lives near {LOCATION} now.",
    "I work at {ORGANIZATION} and my manager {PERSON} shouts at everyone on Fridays.",
    "My son goes to {ORGANIZATION} and the teachers say he is struggling since Christmas.",
    "The receptionist at {ORGANIZATION} was rude when I rang about my repeat prescription.",
    "I started a new job at {ORGANIZATION} two weeks ago and the anxiety is through the roof.",
    "I met {PERSON} at the support group on Wednesday, we got coffee after.",
    "My best friend {PERSON} and her boyfriend {PERSON} are getting married in June.",
    "Last weekend {PERSON} came round and we watched films, it was the first good day in ages.",
    "I keep thinking about what {PERSON} said to me at the funeral.",
    "You can reach me on {PHONE} if the session moves.",
    "My mobile is {PHONE}, text me before Thursday please.",
    "My NHS number is {NHS_NUMBER} if the surgery needs it.",
    "The form asked for my national insurance number, it's {NI_NUMBER}.",
    "My address is {ADDRESS}, {POSTCODE} in case you need to send the letter.",
    "I live at {ADDRESS} and the neighbours are so loud at night.",
    "The postcode is {POSTCODE} but the taxi still got lost.",
    "Email me at {EMAIL} with the worksheet from today's session.",
    "I paid with my card {CARD} and now I'm worried about the money.",
    "The app logged my IP as {IP}, is that normal?",
    "I found this on {URL} and it scared me a bit.",
    "I was born on {DATE_OF_BIRTH} so I turn 40 next month.",
    "DOB: {DATE_OF_BIRTH}, they asked for it twice on the phone.",
    "My birthday is {DATE_OF_BIRTH} and I always feel low around then.",
    "I scored 14 on the PHQ-9 and 11 on the GAD-7 this week.",
    "I take 20mg of citalopram every morning and 2 tablets of propranolol when it gets bad.",
    "On Monday I walked for 30 minutes, on Wednesday I didn't leave the house.",
    "The CBT worksheet says to rate the anxiety from 1 to 10, I put 8.",
    "My GP said the NHS talking therapies team will call within 6 weeks.",
    "Since January I have had maybe 3 good days a week, Sundays are the worst.",
    "The crisis line at Samaritans helped at 2am on Saturday, I called 116 123.",
    "We did EMDR in session 4 and I felt exhausted afterwards until Friday.",
    "I went to A&E in December because of the chest pains, it was a panic attack.",
    "Easter and Christmas are the hardest times since my dad died in 2021.",
    "{PERSON} keeps texting me at 11pm and I don't know how to say no.",
    "I spoke to {PERSON} from {ORGANIZATION} about the debt on Tuesday.",
    "My ex {PERSON} still lives on {ADDRESS} so I avoid that part of {LOCATION}.",
    "Can you tell {PERSON} that I can't make Thursday's group?",
    "me and {PERSON} went to {LOCATION} for the weekend and I didn't have a single panic attack",
)


def _nhs_number(rng: random.Random) -> str:
    while True:
        digits = [rng.randrange(10) for _ in range(9)]
        check = 11 - sum(d * w for d, w in zip(digits, range(10, 1, -1))) % 11
        if check != 10:
            number = "".join(map(str, digits)) + str(check % 11)
            return rng.choice([f"{number[:3]} {number[3:6]} {number[6:]}", f"{number[:3]}-{number[3:6]}-{number[6:]}", number])


def _ni_number(rng: random.Random, faker: Faker) -> str:
    if rng.random() < 0.5:
        return faker.ssn()
    prefix = rng.choice("ABCEGHJKLMNPRSTWXYZ") + rng.choice("ABCEGHJKLMNPRSTWXYZ")
    digits = "".join(str(rng.randrange(10)) for _ in range(6))
    return rng.choice([f"{prefix} {digits[:2]} {digits[2:4]} {digits[4:]} {rng.choice('ABCD')}", f"{prefix}{digits}{rng.choice('ABCD')}"])


def _card(faker: Faker, rng: random.Random) -> str:
    number = faker.credit_card_number()
    if rng.random() < 0.5 and len(number) == 16:
        return " ".join(number[i:i + 4] for i in range(0, 16, 4))
    return number


def _date_of_birth(faker: Faker, rng: random.Random) -> str:
    born: date = faker.date_of_birth(minimum_age=16, maximum_age=80)
    day = born.day
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return rng.choice([
        born.strftime("%d/%m/%Y"), born.strftime("%d-%m-%Y"), born.isoformat(), f"{day} {born:%B %Y}",
        f"{day}{suffix} {born:%B} {born.year}", f"{born:%B} {day}, {born.year}", f"the {day}{suffix} of {born:%B}",
    ])


class CorpusFaker:
    """One seeded source of values per type; names come from seen or held-out locales."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.gb = Faker("en_GB")
        self.gb.seed_instance(seed)
        self.seen = [self._seeded(locale, seed) for locale in GAZETTEER_LOCALES if locale not in ("zh_CN", "ja_JP")]
        self.held_out = [self._seeded(locale, seed) for locale in HELD_OUT_LOCALES]
        lexicon = load_lexicon()
        self.known = lexicon.given_names | lexicon.surnames | lexicon.common_words

    @staticmethod
    def _seeded(locale: str, seed: int) -> Faker:
        faker = Faker(locale)
        faker.seed_instance(seed)
        return faker

    def _unseen(self, make) -> str:
        """A held-out value none of whose words is in the gazetteer (or an everyday word)."""
        for _ in range(50):
            value = make(self.rng.choice(self.held_out))
            if not any(fold(word) in self.known for word in re.findall(r"[^\W\d_]+", value)):
                return value
        return value

    def value(self, label: str, held_out: bool) -> str:
        rng, gb = self.rng, self.gb
        if label == "PERSON":
            if held_out:
                return self._unseen(lambda f: rng.choice([f.first_name(), f"{f.first_name()} {f.last_name()}"]))
            faker = rng.choice(self.seen)
            return rng.choice([faker.first_name(), faker.first_name(), f"{faker.first_name()} {faker.last_name()}"])
        if label == "LOCATION":
            return self._unseen(lambda f: f.city()) if held_out else gb.city()
        if label == "ORGANIZATION":
            if held_out:
                return self._unseen(lambda f: f.company())
            return rng.choice([gb.company(), f"{gb.last_name()} Surgery", f"{gb.city()} Primary School",
                               f"{gb.last_name()} Medical Practice", f"{gb.last_name()} Ltd"])
        if label == "ADDRESS":
            street = gb.street_address().replace("\n", ", ")
            return f"Flat {rng.randint(1, 40)}, {street}" if rng.random() < 0.2 else street
        if label == "POSTCODE":
            code = gb.postcode()
            return rng.choice([code, code, code.replace(" ", ""), code.lower()])
        if label == "PHONE":
            return rng.choice([gb.phone_number(), gb.cellphone_number(), self._seeded("en_US", rng.randrange(9999)).phone_number(),
                               "+33 1 23 45 67 89", f"07{rng.randrange(100, 999)} {rng.randrange(100000, 999999)}"])
        if label == "NHS_NUMBER":
            return _nhs_number(rng)
        if label == "NI_NUMBER":
            return _ni_number(rng, gb)
        if label == "EMAIL":
            return rng.choice([gb.email(), gb.free_email(), gb.company_email()])
        if label == "CARD":
            return _card(gb, rng)
        if label == "IP":
            return rng.choice([gb.ipv4(), gb.ipv4_private(), gb.ipv6()])
        if label == "URL":
            return rng.choice([gb.url(), gb.uri(), f"www.{gb.domain_name()}"])
        if label == "DATE_OF_BIRTH":
            return _date_of_birth(gb, rng)
        raise ValueError(label)


def generate(count: int, *, seed: int = 7, held_out_share: float = 0.4, lower_share: float = 0.2) -> list[Message]:
    """count labelled messages, a few per conversation."""
    source = CorpusFaker(seed)
    rng = source.rng
    messages = []
    for number in range(count):
        template = rng.choice(TEMPLATES)
        lower = rng.random() < lower_share
        held_out = rng.random() < held_out_share
        pieces, entities, cursor = [], [], 0
        for match in re.finditer(r"\{(\w+)\}|[^{]+", template):
            label = match.group(1)
            piece = match.group() if label is None else source.value(label, held_out and label in NAME_TYPES)
            piece = piece.lower() if lower else piece
            if label is not None:
                entities.append(Entity(cursor, cursor + len(piece), label, held_out and label in NAME_TYPES))
            pieces.append(piece)
            cursor += len(piece)
        messages.append(Message("".join(pieces), f"conv-{number // 4}", tuple(entities), lower))
    return messages


# --- Unicode-split identifiers ------------------------------------------------------------------------------

_SPACES = ("\u00a0", "\u2009", "\u202f", "\u2007", "\u2002", "\u3000", "\u205f")
_DASHES = ("\u2010", "\u2011", "\u2013", "\u2014", "\u2212", "\ufe63")
_ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff")
STRUCTURED_TYPES = ("PHONE", "NHS_NUMBER", "NI_NUMBER", "CARD", "POSTCODE", "EMAIL", "IP", "DATE_OF_BIRTH", "ADDRESS")


def _unicode_typed(value: str, rng: random.Random) -> str:
    """value as phones and copy-paste type it: Unicode spaces and dashes, full-width digits, zero-width marks."""
    out = []
    for char in value:
        if char == " ":
            char = rng.choice(_SPACES)
        elif char == "-":
            char = rng.choice(_DASHES)
        elif char.isdigit() and rng.random() < 0.3:
            char = chr(0xFF10 + int(char))
        out.append(char)
        if rng.random() < 0.08:
            out.append(rng.choice(_ZERO_WIDTH))
    return "".join(out)


def unicode_split(count: int, *, seed: int = 11) -> list[Message]:
    """Messages of the standard templates that hold a structured identifier, each identifier retyped."""
    rng = random.Random(seed)
    source = CorpusFaker(seed)
    templates = [t for t in TEMPLATES if any(f"{{{label}}}" in t for label in STRUCTURED_TYPES)]
    messages = []
    for number in range(count):
        pieces, entities, cursor = [], [], 0
        for match in re.finditer(r"\{(\w+)\}|[^{]+", rng.choice(templates)):
            label = match.group(1)
            piece = match.group() if label is None else source.value(label, False)
            if label in STRUCTURED_TYPES:
                piece = _unicode_typed(piece, rng)
            if label is not None:
                entities.append(Entity(cursor, cursor + len(piece), label, False))
            pieces.append(piece)
            cursor += len(piece)
        messages.append(Message("".join(pieces), f"uconv-{number // 4}", tuple(entities), False))
    return messages


# --- Names from outside Faker, gazetteer subtracted -----------------------------------------------------------

# Ways real users type names with no cue the rules know, beside the standard templates.
UNSEEN_TEMPLATES = TEMPLATES + (
    "hi its {PERSON} again",
    "{PERSON} here, bad night again",
    "so {PERSON} and i had a fight",
    "me and {PERSON} are not talking",
    "we drove up to {LOCATION} on saturday",
    "{PERSON} {PERSON} is my key worker",
)


def unseen_names(count: int, *, seed: int = 13, lower_share: float = 0.4) -> list[Message]:
    """Messages whose names and places come from bench/unseen_names.py minus every gazetteer and word list."""
    from bench import unseen_names as source_lists

    rng = random.Random(seed)
    lexicon = load_lexicon()
    known = lexicon.given_names | lexicon.surnames | lexicon.common_words
    given = [n for n in source_lists.GIVEN if fold(n) not in known]
    family = [n for n in source_lists.FAMILY if fold(n) not in known]
    places = [n for n in source_lists.PLACES if fold(n) not in known]
    templates = [t for t in UNSEEN_TEMPLATES if "{PERSON}" in t or "{LOCATION}" in t]
    other = CorpusFaker(seed)
    messages = []
    for number in range(count):
        lower = rng.random() < lower_share
        pieces, entities, cursor = [], [], 0
        for match in re.finditer(r"\{(\w+)\}|[^{]+", rng.choice(templates)):
            label = match.group(1)
            if label == "PERSON":
                piece = rng.choice([rng.choice(given), f"{rng.choice(given)} {rng.choice(family)}"]).title()
            elif label == "LOCATION":
                piece = rng.choice(places).title()
            else:
                piece = match.group() if label is None else other.value(label, False)
            piece = piece.lower() if lower else piece
            if label is not None:
                entities.append(Entity(cursor, cursor + len(piece), label, label in NAME_TYPES))
            pieces.append(piece)
            cursor += len(piece)
        messages.append(Message("".join(pieces), f"nconv-{number // 4}", tuple(entities), lower))
    return messages


def unseen_name_counts() -> dict[str, int]:
    """How many of the hand-written names are left once the gazetteer and word lists are subtracted."""
    from bench import unseen_names as source_lists

    lexicon = load_lexicon()
    known = lexicon.given_names | lexicon.surnames | lexicon.common_words
    return {kind: sum(fold(n) not in known for n in names) for kind, names in
            (("given", source_lists.GIVEN), ("family", source_lists.FAMILY), ("places", source_lists.PLACES))}
