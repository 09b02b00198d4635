"""One Unicode normaliser for every text detector (PII, crisis safety): fold the text for detection, keep a map
back to the original, and let callers act on original spans.

Phone keyboards and copy-paste put characters in text that rules written for ASCII do not expect: digit groups
split by a no-break or thin space, a zero-width space inside an e-mail address, decomposed accents (NFD), bidi
controls, full-width digits, dashes of every kind, and letters of another script that look like Latin ones.
`fold` turns all of these into one plain form, character cluster by character cluster, and records for every
folded character the original range it came from, so that a span found in the folded text can be replaced in
the original (text outside replaced spans never changes).

What folding does, per cluster (a base character and the combining marks after it):
- format characters (Unicode category Cf: zero-width spaces and joiners, bidi controls, soft hyphen, word
  joiner), other invisible fillers and control characters other than tab and newlines are removed;
- every space separator (Zs) becomes " ", line and paragraph separators "\\n", every dash (Pd) and the minus
  sign "-";
- the rest is NFKC-normalised as a cluster, so "e" + U+0301 becomes "é" and full-width "１" becomes "1";
- every decimal digit of any script (Unicode Nd: Arabic-Indic "٣", Devanagari "३", mathematical "𝟑") becomes its
  ASCII digit, so an identifier reads the same whatever digits it was typed in;
- with `confusables=True`, Cyrillic and Greek letters that look like Latin ones become those Latin letters
  (for detectors of English phrases; off for PII, where a Cyrillic name must stay Cyrillic).
Case is kept: detectors casefold themselves where they want to.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Folded", "fold"]

# Invisible characters that are not in category Cf but render as nothing (Hangul fillers, the combining grapheme
# joiner, Mongolian and Khmer invisible vowels).
_INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e\u3164\uffa0")
_KEPT_CONTROLS = frozenset("\t\n\r")
_MINUS_SIGNS = frozenset("\u2212\u2796\ufe63\uff0d")

# Letters of other scripts that render like Latin ones, for detectors that read English (crisis phrases).
_CONFUSABLES = str.maketrans({
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
    "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "һ": "h", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T", "Х": "X",
    "Ѕ": "S", "І": "I", "Ј": "J", "У": "Y",
    # Greek
    "α": "a", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P",
    "Τ": "T", "Υ": "Y", "Χ": "X",
})


@dataclass(frozen=True, slots=True)
class Folded:
    """Folded text and, for each of its characters, the original range [starts[i], ends[i]) it came from."""

    original: str
    text: str
    starts: Sequence[int]
    ends: Sequence[int]

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The original range that folded text[start:end] came from (whole clusters, with the invisible
        characters between them). An empty range maps to an empty original range at its position."""
        if not 0 <= start <= end <= len(self.text):
            raise ValueError(f"span {start}:{end} outside folded text of length {len(self.text)}")
        if start == end:
            at = self.starts[start] if start < len(self.text) else len(self.original)
            return at, at
        return self.starts[start], self.ends[end - 1]


def _fold_cluster(cluster: str, confusables: bool) -> str:
    first = cluster[0]
    category = unicodedata.category(first)
    if first in _KEPT_CONTROLS:
        return first
    if category in ("Cf", "Cc", "Cs", "Co", "Cn") or first in _INVISIBLE:
        # The whole cluster: combining marks on an invisible base would otherwise float onto the next letter.
        return ""
    if category == "Zs":
        return " "
    if category in ("Zl", "Zp"):
        return "\n"
    if category == "Pd" or first in _MINUS_SIGNS:
        return "-"
    folded = unicodedata.normalize("NFKC", cluster)
    if not folded.isascii():
        folded = "".join(str(unicodedata.decimal(char)) if unicodedata.category(char) == "Nd" else char for char in folded)
    if confusables:
        folded = folded.translate(_CONFUSABLES)
    return folded


def _clusters(text: str):
    """(start, end) of each base character with the combining marks (and invisible joiners) after it."""
    n = len(text)
    i = 0
    while i < n:
        j = i + 1
        while j < n and unicodedata.combining(text[j]):
            j += 1
        yield i, j
        i = j


def fold(text: str, *, confusables: bool = False) -> Folded:
    """Fold `text` for detection (see the module docstring); plain ASCII comes back as it is, at no cost."""
    if text.isascii() and text.isprintable():
        return Folded(text, text, range(len(text)), range(1, len(text) + 1))
    pieces: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for start, end in _clusters(text):
        folded = _fold_cluster(text[start:end], confusables)
        pieces.append(folded)
        starts.extend([start] * len(folded))
        ends.extend([end] * len(folded))
    return Folded(text, "".join(pieces), tuple(starts), tuple(ends))
