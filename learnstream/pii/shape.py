"""How much a word no list holds looks like a name rather than English: a character-trigram naive Bayes model
learnt, when first asked, from the gazetteer's names (one class) and the English word list (the other).

A lower-case "yekaterina", "vaithilingam" or "hiromasa" is in no list, but its letters are those of names
("-ina", "-am", "hiro-"); "lowkey", "rammed" or a typo such as "becuase" has the letters of English words, and
chat shorthand ("ngl", "omw") has none of a name's vowels. The score is the mean log-odds per trigram, so long
and short words are judged alike.
"""

from __future__ import annotations

import math
from collections import Counter
from functools import cache

from learnstream.pii.lexicon import load_lexicon


def _trigrams(key: str) -> list[str]:
    padded = f"^^{key}$"
    return [padded[i:i + 3] for i in range(len(padded) - 2)]


@cache
def _model() -> tuple[dict[str, float], float]:
    """log P(trigram | name) - log P(trigram | word) for every trigram seen, and the score of an unseen one."""
    lexicon = load_lexicon()
    names = lexicon.names - lexicon.common_words
    counts = {"name": Counter(), "word": Counter()}
    for kind, words in (("name", names), ("word", lexicon.common_words)):
        for word in words:
            if word.isalpha():
                counts[kind].update(_trigrams(word))
    vocabulary = set(counts["name"]) | set(counts["word"])
    totals = {kind: sum(counter.values()) + len(vocabulary) for kind, counter in counts.items()}
    odds = {
        trigram: math.log((counts["name"][trigram] + 1) / totals["name"])
        - math.log((counts["word"][trigram] + 1) / totals["word"])
        for trigram in vocabulary
    }
    return odds, math.log(totals["word"] / totals["name"])


def name_score(key: str) -> float:
    """Mean log-odds per letter trigram that key (casefolded, accents dropped) is a name, not an English word."""
    odds, unseen = _model()
    trigrams = _trigrams(key)
    return sum(odds.get(trigram, unseen) for trigram in trigrams) / len(trigrams)
