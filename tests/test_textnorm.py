"""The shared Unicode normaliser: folding is total, its offset map always points back into the original, and the
characters phone keyboards produce fold to what ASCII rules expect."""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from learnstream.textnorm import fold

SPACES = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Zs"]
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u202e", "\u2066", "\u034f"]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec=None), max_size=60))
def test_every_folded_character_maps_back_into_the_original(text):
    folded = fold(text)
    assert len(folded.starts) == len(folded.ends) == len(folded.text)
    for i, (start, end) in enumerate(zip(folded.starts, folded.ends)):
        assert 0 <= start < end <= len(text)
        if i:
            assert folded.starts[i - 1] <= start
    start, end = folded.original_span(0, len(folded.text))
    assert 0 <= start <= end <= len(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text("0123456789", min_size=2, max_size=5), min_size=2, max_size=5),
       st.sampled_from(SPACES + ["\u2010", "\u2011", "\u2013", "\u2014", "\u2212"]), st.lists(st.sampled_from(INVISIBLE)))
def test_separators_and_invisibles_fold_to_ascii(groups, separator, invisibles):
    joined = separator.join(groups)
    noisy = joined[:1] + "".join(invisibles) + joined[1:]
    expected = (" " if unicodedata.category(separator) == "Zs" else "-").join(groups)
    folded = fold(noisy)
    assert folded.text == expected
    assert folded.original_span(0, len(folded.text)) == (0, len(noisy))


def test_clusters_compose_and_widths_fold():
    decomposed = unicodedata.normalize("NFD", "Montréal")
    folded = fold(decomposed)
    assert folded.text == "Montréal"
    # The accent belongs to the span of its base letter, so replacing the word leaves no mark behind.
    assert folded.original_span(0, len(folded.text)) == (0, len(decomposed))
    assert fold("０７７００ ９００１２３").text == "07700 900123"


def test_confusables_only_when_asked():
    assert fold("kill mysеlf", confusables=True).text == "kill myself"   # Cyrillic е
    assert fold("Дмитрий").text == "Дмитрий"


DECIMAL_DIGITS = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Nd"]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(DECIMAL_DIGITS), max_size=20))
def test_decimal_digits_of_every_script_fold_to_ascii(digits):
    folded = fold("".join(digits))
    assert folded.text == "".join(str(unicodedata.decimal(d)) for d in digits)
    assert folded.original_span(0, len(folded.text)) == (0, len(digits))
