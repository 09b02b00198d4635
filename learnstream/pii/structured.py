"""Structured identifiers found by pattern and checksum: emails, phones, NHS and NI numbers, postcodes,
payment cards, IP addresses, URLs, dates of birth and street addresses.

Long digit runs are classified by what they validate as: a 10-digit run passing the NHS mod-11 check is
an NHS_NUMBER, a 13-19 digit run passing Luhn is a CARD, and any other run of 9 or more digits is removed
as PHONE. That is a deliberate privacy choice: a mistyped NHS or card number still points at a person,
and no harmless number in a therapy chat is that long. Shorter numbers (scores, doses, years) are kept.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

from learnstream.pii.lexicon import fold, load_lexicon


class Span(NamedTuple):
    start: int
    end: int
    label: str  # placeholder type, e.g. "PHONE"
    priority: int  # where spans overlap they are merged and the highest priority names the type


STRUCTURED_PRIORITY = 3

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_TLDS = r"com|org|net|edu|gov|io|info|biz|co|uk|me|ly|app|dev|ai|eu|de|fr|es|it|nl|ie|in|ng|za|au|ca|us|tv"
_URL = re.compile(
    rf"(?i)\b(?:https?://|www\.)[^\s<>\"']+|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:{_TLDS})\b(?:/[^\s<>\"']*)?"
)
_IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")
_IPV6_CANDIDATE = re.compile(r"(?i)(?<![\w:])[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}(?![\w:])")
# A run of digits written with the separators people use in phone, NHS and card numbers, optionally with
# an international prefix and an extension ("+44 (0)20 7946 0000", "485 777 3456", "555.123.4567x89").
_ANY_DIGIT = re.compile(r"\d")  # every pattern below needs one
_DIGIT_RUN = re.compile(r"(?i)(?<![\w+])(?:\+|\(\+?)?\d[\d \-.()]{6,}\d\)?(?:\s*(?:x|ext\.?)\s*\d{1,5})?(?![\w])")
# Groups split by a space, a dash or a dot (in the folded text every Unicode space and dash is one of these).
# Any two letters: Faker and test data use prefixes the real scheme forbids ("ZZ"). Without the final
# letter, a two-letter word before six digits ("my 123456") is not taken for a prefix.
_NI_NUMBER = re.compile(r"(?i)\b(?P<prefix>[a-z]{2})[ .-]?\d{2}[ .-]?\d{2}[ .-]?\d{2}(?P<suffix>[ .-]?[a-z])?\b")
_NOT_NI_PREFIXES = frozenset(
    "my me we he be by at an as am hi ok pm mg ml kg km cm mm no to on in is of or so up us it if do go".split()
)
_NHS_GROUPING = re.compile(r"\d{3}[ -]\d{3}[ -]\d{4}")
_POSTCODE = re.compile(r"(?i)\b(?:[a-z]{1,2}\d[a-z\d]?|gir) ?\d[a-z]{2}\b")

_MONTH = (
    r"(?:january|february|march|april|may|june|july|august|september|october|november|december"
    r"|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)\.?"
)
_DAY = r"\d{1,2}(?:st|nd|rd|th)?"
_DATE = (
    rf"(?:\d{{1,2}}[/.-]\d{{1,2}}[/.-]\d{{2,4}}|\d{{4}}-\d{{1,2}}-\d{{1,2}}"
    rf"|(?:the\s+)?{_DAY}(?:\s+of)?\s+{_MONTH}(?:,?\s+\d{{4}})?|{_MONTH}\s+{_DAY}(?:,?\s+\d{{4}})?"
    rf"|{_MONTH}\s+\d{{4}}|(?:19|20)\d{{2}})"
)
_DOB_CUE = r"(?:born(?:\s+on|\s+in)?|d\.?o\.?b\.?|date\s+of\s+birth|birth\s*day|b'?day)"
_DATE_OF_BIRTH = re.compile(rf"(?i)\b{_DOB_CUE}(?:\s+is)?\s*[:\-]?\s*(?:is\s+|on\s+)?(?P<date>{_DATE})\b\.?")

# Street types: the strong ones name a street even in lower case; the weak ones are everyday words too
# ("run", "key"), so the words before them must look like a name.
STRONG_STREET_TYPES = frozenset((
    "street st road rd avenue ave lane ln close drive dr crescent cres terrace grove gardens gdns mews "
    "boulevard blvd parkway court ct place pl square sq walk way hill row rise vale wharf parade broadway"
).split())
_WEAK_STREET_TYPES = (
    "alley branch bridge brook brooks burg burgs bypass camp canyon cape causeway center centers circle "
    "circles cliff cliffs club common corner corners course courts cove coves creek crest crossing "
    "crossroad curve dale dam divide drives estate estates expressway extension extensions fall falls ferry "
    "field fields flat flats ford fords forest forge forges fork forks fort freeway garden gateway glen "
    "glens green greens groves harbor harbors haven heights highway hills hollow inlet island islands isle "
    "junction junctions key keys knoll knolls lake lakes land landing light lights loaf lock locks lodge "
    "loop mall manor manors meadow meadows mill mills mission motorway mount mountain mountains neck "
    "orchard oval overpass park parks parkways pass passage path pike pine pines plain plains plaza point "
    "points port ports prairie radial ramp ranch rapid rapids rest ridge ridges river roads route rue run "
    "shoal shoals shore shores skyway spring springs spur spurs squares station stravenue stream streets "
    "summit throughway trace track trafficway trail tunnel turnpike underpass union unions valley valleys via "
    "viaduct view views village villages ville vista walks wall ways well wells"
).split()
STREET_TYPES = STRONG_STREET_TYPES | frozenset(_WEAK_STREET_TYPES)
_UNIT = r"(?:flat|apartment|apt|studio)\s+\d{1,4}[a-z]?\b"
_NUMBER = r"\d{1,4}[a-z]?\b,?\s+"
_ADDRESS = re.compile(
    rf"(?i)\b(?:{_UNIT}[,\s]+(?:{_NUMBER})?|{_NUMBER})"
    rf"(?P<middle>(?:[^\W\d_][\w'’-]*\s+){{1,3}})(?P<type>{'|'.join(sorted(STREET_TYPES, key=len, reverse=True))})\b\.?"
)
_UNIT_ONLY = re.compile(rf"(?i)\b{_UNIT}")
# Words that never sit inside a street name: they show "3 days in a row" is not an address.
_NOT_STREET_WORDS = frozenset(
    "the a an of in on at to for and or but with my your his her our their this that is are was were be it "
    "i we you they he she times days weeks months years hours minutes mins hrs mg miles km steps".split()
)


def _nhs_valid(digits: str) -> bool:
    total = sum(int(digit) * weight for digit, weight in zip(digits[:9], range(10, 1, -1)))
    check = 11 - total % 11
    return len(digits) == 10 and check != 10 and int(digits[9]) == check % 11


def _luhn_valid(digits: str) -> bool:
    total = 0
    for position, digit in enumerate(reversed(digits)):
        value = int(digit) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _classify_digit_run(run: str) -> str | None:
    number = re.split(r"(?i)\s*(?:x|ext)", run)[0]
    digits = re.sub(r"\D", "", number)
    international = number.lstrip("(").startswith(("+", "00"))
    if len(digits) < 9:
        return None
    # UK phone numbers start with 0 too; a valid check digit only wins there when written 3-3-4.
    if not international and _nhs_valid(digits) and (digits[0] != "0" or _NHS_GROUPING.fullmatch(number.strip())):
        return "NHS_NUMBER"
    if not international and 13 <= len(digits) <= 19 and digits[0] != "0" and _luhn_valid(digits):
        return "CARD"
    return "PHONE"


def _street_middle_ok(middle: str, street_type: str) -> bool:
    words = middle.split()
    if any(word.casefold() in _NOT_STREET_WORDS for word in words):
        return False
    if street_type.casefold() in STRONG_STREET_TYPES:
        return True
    lexicon = load_lexicon()
    return all(
        word[0].isupper() or fold(word) in lexicon.surnames or fold(word) in lexicon.given_names
        or fold(word) not in lexicon.common_words
        for word in words
    )


def _addresses(text: str) -> list[Span]:
    spans = []
    for match in _ADDRESS.finditer(text):
        if _street_middle_ok(match["middle"], match["type"]):
            spans.append(Span(match.start(), match.end(), "ADDRESS", STRUCTURED_PRIORITY))
    spans += [Span(m.start(), m.end(), "ADDRESS", STRUCTURED_PRIORITY) for m in _UNIT_ONLY.finditer(text)]
    return spans


def _ipv6(text: str) -> list[Span]:
    spans = []
    for match in _IPV6_CANDIDATE.finditer(text):
        try:
            ipaddress.IPv6Address(match.group())
        except ValueError:
            continue
        spans.append(Span(match.start(), match.end(), "IP", STRUCTURED_PRIORITY + 1))
    return spans


def find_structured(text: str) -> list[Span]:
    """Every structured identifier in text; spans may overlap (the caller merges them)."""
    spans: list[Span] = []

    def add(pattern: re.Pattern[str], label: str, priority: int = STRUCTURED_PRIORITY, group: int | str = 0) -> None:
        spans.extend(Span(m.start(group), m.end(group), label, priority) for m in pattern.finditer(text))

    if "@" in text:
        add(_EMAIL, "EMAIL", STRUCTURED_PRIORITY + 2)
    if "." in text:
        add(_URL, "URL", STRUCTURED_PRIORITY + 1)
    if text.count(":") >= 2:
        spans += _ipv6(text)
    if not _ANY_DIGIT.search(text):
        return spans
    add(_IPV4, "IP", STRUCTURED_PRIORITY + 1)
    for match in _DIGIT_RUN.finditer(text):
        label = _classify_digit_run(match.group())
        if label:
            spans.append(Span(match.start(), match.end(), label, STRUCTURED_PRIORITY))
    spans += [
        Span(m.start(), m.end(), "NI_NUMBER", STRUCTURED_PRIORITY) for m in _NI_NUMBER.finditer(text)
        if m["suffix"] or m["prefix"].casefold() not in _NOT_NI_PREFIXES
    ]
    add(_POSTCODE, "POSTCODE")
    add(_DATE_OF_BIRTH, "DATE_OF_BIRTH", group="date")
    spans += _addresses(text)
    return spans
