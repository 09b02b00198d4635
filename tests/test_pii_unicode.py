"""The anonymizer against identifiers typed the way phones and copy-paste type them: every structured type with
random separators (every Unicode space Zs, dashes, dots, zero-width characters) and full-width digits, inside
random surrounding text. No digit run of the identifier survives, and the text around it never changes."""

from __future__ import annotations

import re
import sys
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from learnstream.pii import TextAnonymizer
from learnstream.textnorm import fold

SPACES = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Zs"]
DASHES = [chr(c) for c in range(0x3100) if unicodedata.category(chr(c)) == "Pd"] + ["\u2212", "\uff0d"]
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]
GROUP_SEPARATORS = SPACES + DASHES + ["."]
# Surrounding words that name no one and hold no digit: whatever is left of the identifier shows.
WORDS = "i feel so tired today please call me on the number is this thanks my it was then later ok".split()
PLACEHOLDER = re.compile(r"\[[A-Z_]+_[0-9a-f]{4}\]")

HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def anonymizer() -> TextAnonymizer:
    return TextAnonymizer(key=b"test-key", ner_model="en_core_web_sm")


def _nhs_number(first_nine: str) -> str | None:
    check = 11 - sum(int(d) * w for d, w in zip(first_nine, range(10, 1, -1))) % 11
    return None if check == 10 else first_nine + str(check % 11)


def _luhn_complete(body: str) -> str:
    for last in "0123456789":
        digits = body + last
        total = sum((v * 2 - 9 if v * 2 > 9 else v * 2) if i % 2 else v
                    for i, v in enumerate(int(d) for d in reversed(digits)))
        if total % 10 == 0:
            return digits
    raise AssertionError("unreachable")


def _digit_string(length: int) -> st.SearchStrategy[str]:
    return st.text("0123456789", min_size=length, max_size=length)


# Each identifier as its groups of characters; separators go between groups.
phones = st.one_of(
    _digit_string(6).map(lambda d: ["07700", d[:3], d[3:]]),
    _digit_string(8).map(lambda d: ["+44", "20", d[:4], d[4:]]),
    _digit_string(7).map(lambda d: ["0161", d[:3], d[3:]]),
)
nhs_numbers = _digit_string(9).map(_nhs_number).filter(bool).map(lambda n: [n[:3], n[3:6], n[6:]])
cards = _digit_string(14).map(lambda d: _luhn_complete("4" + d)).map(lambda n: [n[i:i + 4] for i in range(0, 16, 4)])
ni_numbers = st.tuples(st.sampled_from(["QQ", "AB", "ZX"]), _digit_string(6), st.sampled_from("ABCD")).map(
    lambda t: [t[0], t[1][:2], t[1][2:4], t[1][4:], t[2]]
)
dates_of_birth = st.tuples(st.integers(1, 28), st.integers(1, 12), st.integers(1940, 2010)).map(
    lambda t: ["born on", f"{t[0]:02d}/{t[1]:02d}/{t[2]}"]
)
postcodes = st.tuples(st.sampled_from(["SW1A", "LS6", "M1", "B33", "EH1"]), st.integers(0, 9)).map(
    lambda t: [t[0], f"{t[1]}AB"]
)


def _full_width(text: str, mask: list[bool]) -> str:
    return "".join(chr(0xFF10 + int(c)) if c.isdigit() and wide else c for c, wide in zip(text, mask))


@st.composite
def typed(draw, groups: st.SearchStrategy[list[str]], separators: list[str]) -> str:
    """The groups joined by drawn separators, some digits full-width, zero-width characters scattered in."""
    parts = draw(groups)
    text = parts[0]
    for part in parts[1:]:
        text += draw(st.sampled_from(separators)) + part
    text = _full_width(text, draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text))))
    chars = list(text)
    for _ in range(draw(st.integers(0, 3))):
        chars.insert(draw(st.integers(1, len(chars) - 1)), draw(st.sampled_from(ZERO_WIDTH)))
    return "".join(chars)


@st.composite
def surrounding(draw) -> tuple[str, str]:
    """Words before and after, each word followed by a drawn Unicode space (the text must never change)."""
    def words(n_min: int) -> str:
        chosen = draw(st.lists(st.sampled_from(WORDS), min_size=n_min, max_size=5))
        return "".join(word + draw(st.sampled_from(SPACES)) for word in chosen)
    before = words(0)
    after = draw(st.sampled_from(SPACES + [", ", ". ", "! "])) + words(0) + draw(st.sampled_from(["", ".", "?"]))
    return before, after


def _assert_removed(anonymizer: TextAnonymizer, identifier: str, around: tuple[str, str]) -> None:
    before, after = around
    text = before + identifier + after
    out = anonymizer.anonymize(text, "conversation")
    assert out.startswith(before) and out.endswith(after), (text, out)
    middle = out[len(before):len(out) - len(after)]
    assert PLACEHOLDER.search(middle), (text, out)
    left = fold(PLACEHOLDER.sub("", middle)).text
    assert not re.search(r"\d", left), (text, out)  # no digit run of the identifier survives


@pytest.mark.parametrize("groups", [phones, nhs_numbers, cards], ids=["phone", "nhs", "card"])
def test_digit_identifiers_split_by_any_separator_are_removed(anonymizer, groups):
    @HYPOTHESIS
    @given(identifier=typed(groups, GROUP_SEPARATORS), around=surrounding())
    def check(identifier, around):
        _assert_removed(anonymizer, identifier, around)

    check()


# The zero of every script's decimal digits (Unicode Nd: Arabic-Indic, Devanagari, Thai, mathematical, ...); each
# script's digits 0-9 are consecutive code points.
DIGIT_ZEROS = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Nd" and unicodedata.decimal(chr(c)) == 0]


@pytest.mark.parametrize("groups", [phones, nhs_numbers, cards], ids=["phone", "nhs", "card"])
def test_digit_identifiers_in_any_script_are_removed_under_the_ascii_placeholder(anonymizer, groups):
    @HYPOTHESIS
    @given(identifier=typed(groups, GROUP_SEPARATORS), around=surrounding(),
           zeros=st.lists(st.sampled_from(DIGIT_ZEROS), min_size=1, max_size=3), data=st.data())
    def check(identifier, around, zeros, data):
        # Each digit in one of the drawn scripts: a whole number in Arabic-Indic, or scripts mixed.
        retyped = "".join(chr(ord(data.draw(st.sampled_from(zeros))) + int(c)) if c.isdigit() else c for c in identifier)
        _assert_removed(anonymizer, retyped, around)
        ascii_form = fold(identifier).text  # full-width and invisible characters as the fold reads them
        assert _placeholders(anonymizer, retyped) == _placeholders(anonymizer, ascii_form), (retyped, ascii_form)

    check()


def _placeholders(anonymizer: TextAnonymizer, identifier: str) -> list[str]:
    return PLACEHOLDER.findall(anonymizer.anonymize(f"call me on {identifier} please", "conversation"))


@pytest.mark.parametrize("groups, separators", [
    (ni_numbers, SPACES + DASHES + ["."]),
    (postcodes, SPACES),
    (dates_of_birth, SPACES),
], ids=["ni", "postcode", "date_of_birth"])
def test_lettered_identifiers_split_by_any_separator_are_removed(anonymizer, groups, separators):
    @HYPOTHESIS
    @given(identifier=typed(groups, separators), around=surrounding())
    def check(identifier, around):
        _assert_removed(anonymizer, identifier, around)

    check()


emails = st.tuples(
    st.sampled_from(["sarah.jones", "k.okafor", "priya99", "tom_b"]),
    st.sampled_from(["example.com", "mail.co.uk", "nhs.net"]),
).map(lambda t: [f"{t[0]}@{t[1]}"])
ip_addresses = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: [".".join(map(str, t))])


@pytest.mark.parametrize("groups", [emails, ip_addresses], ids=["email", "ip"])
def test_emails_and_ips_with_invisible_characters_are_removed_whole(anonymizer, groups):
    @HYPOTHESIS
    @given(identifier=typed(groups, [""]), around=surrounding())
    def check(identifier, around):
        before, after = around
        out = anonymizer.anonymize(before + identifier + after, "conversation")
        assert out.startswith(before) and out.endswith(after)
        left = fold(PLACEHOLDER.sub("", out[len(before):len(out) - len(after)])).text
        assert not re.search(r"[\w@]", left), out  # not even the local part of the address

    check()


@HYPOTHESIS
@given(text=st.text(st.characters(codec="utf-8"), max_size=200))
def test_any_text_keeps_every_character_outside_the_spans(anonymizer, text):
    [spans] = anonymizer.detect_batch([text])
    expected, cursor = "", 0
    for span in spans:
        assert cursor <= span.start < span.end <= len(text)
        expected += text[cursor:span.start] + anonymizer.placeholder(span.label, text[span.start:span.end], "c")
        cursor = span.end
    assert anonymizer.anonymize(text, "c") == expected + text[cursor:]


def test_decomposed_accents_and_bidi_controls():
    anonymizer = TextAnonymizer(key=b"test-key", ner_model=None)
    assert anonymizer.anonymize("I moved to Montre\u0301al last year", "c").endswith("] last year")
    assert "\u0301" not in anonymizer.anonymize("I moved to Montre\u0301al last year", "c")
    assert anonymizer.anonymize("I feel \u202esad\u202c today", "c") == "I feel \u202esad\u202c today"
    assert anonymizer.anonymize("mail jo\u200bhn.smith@example.com", "c") == "mail " + anonymizer.placeholder(
        "EMAIL", "john.smith@example.com", "c")
