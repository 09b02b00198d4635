"""Names no list holds, typed in lower case with no cue (learnstream.pii.shape and the person-slot rule)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learnstream.pii import TextAnonymizer
from learnstream.pii.lexicon import fold, load_lexicon
from learnstream.pii.shape import name_score

# Written for this test: names of no gazetteer locale (Kyrgyz, Mongolian, Kazakh), checked below to be in no list.
NAMES = ("zhyldyz", "tsetseg", "bekzat", "altantsetseg", "aizhamal")


@pytest.fixture(scope="module")
def anonymizer() -> TextAnonymizer:
    return TextAnonymizer(key=b"test-key", ner_model=None)  # the rules alone: no model to lean on


def test_the_test_names_are_in_no_list() -> None:
    lexicon = load_lexicon()
    assert not [name for name in NAMES if fold(name) in lexicon.names | lexicon.common_words]


@pytest.mark.parametrize("template", [
    "ugh {} again", "{}: you ok?", "found out {} lied about everything", "cried on {} for ages",
    "did {} ever call back", "{} wont answer my calls", "{} hasnt eaten in days", "without {} id be lost",
])
@pytest.mark.parametrize("name", NAMES[:3])
def test_a_lower_case_unknown_name_in_a_person_slot_goes(anonymizer: TextAnonymizer, template: str, name: str) -> None:
    out = anonymizer.anonymize(template.format(name), "c")
    assert name not in out and "[PERSON_" in out


@pytest.mark.parametrize("text", [
    "the app logged my ip", "ugh gutted again", "skint til friday tbh", "soz im late", "my mate reckons i need a break",
])
def test_everyday_chat_with_words_no_list_holds_is_kept(anonymizer: TextAnonymizer, text: str) -> None:
    assert anonymizer.anonymize(text, "c") == text


def test_a_relation_cue_stays_outside_the_name(anonymizer: TextAnonymizer) -> None:
    assert anonymizer.anonymize("my mate bekzat reckons so", "c").startswith("my mate [PERSON_")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_name_score_is_finite_for_any_text(word: str) -> None:
    assert math.isfinite(name_score(fold(word)))


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(categories=("Ll", "Lu", "Lo", "Zs", "Mn")), min_size=1, max_size=12),
       st.sampled_from(["ugh {} again", "{}: ok?", "did {} ever", "{} wont go"]))
def test_any_word_in_a_person_slot_leaves_the_rest_untouched(anonymizer: TextAnonymizer, word: str, template: str) -> None:
    text = template.format(word)
    before, after = template.split("{}")
    out = anonymizer.anonymize(text, "c")
    assert out.startswith(before.rstrip(" :")) and out.endswith(after.lstrip(" :"))
