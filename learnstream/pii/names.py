"""Names, places and organisations found without a model: gazetteers, word shapes and context cues.

These rules run on every message and catch what a small NER model misses (lower-case and non-English
names, "my sister X", "Dr X", "X from work", "I work at X"). They also tell the caller which messages
still hold capitalised words they cannot explain: only those go through the NER model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from learnstream.pii.lexicon import NON_PII_TERMS, PLACES, PLACES_THAT_ARE_WORDS, TOWN_SUFFIXES, fold, load_lexicon
from learnstream.pii.shape import name_score
from learnstream.pii.structured import STREET_TYPES, STRONG_STREET_TYPES, Span

SUFFIX_PRIORITY = 3  # "X Surgery", "X Road": the last word says what the whole is
CUE_PRIORITY = 2  # a rule with context evidence outranks the model
PROPER_NOUN_PRIORITY = 0  # an unknown capitalised word: the model's label wins when it has one

_TOKEN = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f'’-]+")
_CONTRACTION_ENDINGS = frozenset({"t", "re", "ve", "ll", "d", "m"})
_SENTENCE_END = re.compile(r"[.!?\n]")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that are never a name even after a cue ("my friend said", "Dr and nurse").
_FUNCTION_WORDS = _words("""
    a an the and or but if so as at by for from in into of off on onto out over to up with about after
    again against all also am any are be been before being below between both can could did do does doing
    down during each few further had has have having he her here hers herself him himself his how i is it
    its itself just me more most my myself no nor not now only other our ours ourselves own same she
    should some such than that their theirs them themselves then there these they this those through too
    under until very was we were what when where which while who whom why will would you your yours
    yourself yourselves really still never always even because cos said says told thinks wants keeps
    kept got gets went goes came comes asked feels felt knows knew loves hates left died lives lived works
    worked tried took takes makes made sent is isn't doesn't didn't won't can't wasn't
""")
_RELATIONS = _words("""
    sister brother mum mom mother dad father son daughter wife husband partner boyfriend girlfriend friend
    friends bestie bff cousin aunt auntie aunty uncle nan nana gran granny grandma grandmother grandad
    granddad grandpa grandfather niece nephew colleague coworker boss manager supervisor neighbour neighbor
    flatmate housemate roommate ex fiance fiancé fiancée stepdad stepmum stepmom stepson stepdaughter kid
    baby child teacher tutor therapist counsellor counselor mate pal carer sibling twin sis bro lad
""")
_TITLES = _words("dr doctor mr mrs ms miss mx prof professor sir dame nurse")
_NAMING = _words("called named name name's i'm im am meet hi hello hey dear thanks")
# Words after which an unknown word is most likely a person ("I told ngozi", "with ayodele").
_PERSON_BEFORE = _words("""
    with told tell telling texted text texting messaged message met meeting saw see seeing asked ask
    phoned phone rang ring visited visit visiting love loves miss missed married marry dating blame hugged
    trust and than by invited helped help hate hates ignored ignoring avoid avoiding about for to like
""")
# Verbs after which an unknown word is most likely the person doing it ("ngozi said").
_PERSON_AFTER = _words("""
    said says told thinks thought wants wanted keeps kept came comes went goes asked feels felt knows knew
    loves loved hates hated left died passed lives lived works worked tried shouted yelled cried called
    texted rang hit took takes makes made bought sent is was has had doesn't didn't isn't wasn't won't
    can't never always just still here
""")
# Words around an unknown word that make it the subject or object of a clause ("found out X lied", "cried on X",
# "did X ever"), for words whose letters look like a name's (shape.py): typed in lower case with no cue.
_CLAUSE_OPENERS = _words("""
    ugh omg oh ah ffs god wow honestly anyway apparently so yeah and but because cos coz cuz then when if until
    unless since while whether though although n
""")
_PREPOSITIONS = _words("on without except round behind beside after before against between among near off")
_AUXILIARIES = _words("did does do is was has had will would can could should")
_VERBS_AFTER = _words("""
    wont cant doesnt didnt isnt wasnt hasnt havent hadnt shouldnt wouldnt couldnt aint will would could should
    can might must ever never always just still also really literally finally actually again n
""")
_DETERMINERS = _words("the a an my your his her our their this that these those some any every no each")
# Below this mean trigram log-odds a word reads as English ("rammed", "gutted", a typo): never a name by slot alone.
_NAME_SHAPE_MIN = -0.5
_GREETINGS = _words("hi hey hello hiya")  # "hi its X again", "hey it's X"
_SPEECH_VERBS = _words("said says told thinks came comes keeps kept texted called asked wants rang")
# "X from work": where the people a client talks about come from.
_PLACES_PEOPLE_MEET = _words("work school uni college church mosque temple gym class next football")
_PLACE_BEFORE = _words("in near from outside around towards")
_AREA_WORDS = _words("part outskirts area city town centre center edge middle north south east west")  # "part of X"
_MOVE_VERBS = _words("move moved moving went go going gone back trip drive drove fly flew travel travelled commute")
_PLACE_PREFIXES = _words("north south east west new lake port upper lower saint st fort mount")
_ORG_CUES = _words("work works working worked job shift employed study studying student pupil intern volunteer")
# Last words of organisation names, legal forms of many countries included ("Hansson Lindblad AB").
_ORG_SUFFIXES = _words("""
    surgery practice school primary academy college university hospital clinic ltd limited plc llc inc
    group partners sons church mosque temple gurdwara synagogue nursery centre center pharmacy bank cafe
    restaurant pub hotel gym studios solutions services associates consulting foundation trust
    ab oy oyj ky ry hb kb tmi aps gmbh ag kg sa srl spa bv nv tbk persero kft kht bt zrt nyrt sarl sas epic associes
""")
_ORG_PREFIXES = _words("pt cv ud pd")  # Indonesian legal forms come first ("PT Widodo Andriani")
_DOTTED_LEGAL_FORM = re.compile(r"(?i)\s+(?:(?:[a-z]{1,3}\.){2,4}|(?:kht|kft|bt|zrt|ltd|inc|co|corp)\.)(?!\w)")
# Words that sit inside organisation names but name nothing alone ("the Medical Centre").
_ORG_WORDS = _words("""
    medical health dental community primary secondary high grammar infant junior family general royal memorial
    city county district national care st saint and et
""")
_PARTICLES = _words("van von der den de da das del della di du le la al el bin ibn bint ben ó o ní nic mac mc ap ter ten")


@dataclass(slots=True)  # not frozen: a frozen dataclass is built field by field, and texts have many words
class Token:
    start: int
    end: int  # possessive "'s" excluded
    key: str  # folded form used for every lookup
    capitalised: bool  # Title case ("Sarah"), not ALL CAPS
    acronym: bool  # ALL CAPS, two letters or more
    given: bool  # a known first name that is not an everyday word
    surname: bool  # a known family name that is not an everyday word
    name_word: bool  # a known first or family name that is also an everyday word ("Rose", "Mark")
    family_name_word: bool  # a known family name that is also an everyday word ("Brown", "Miller")
    common: bool  # an everyday English word, a contraction or a known non-PII term
    place: bool
    latin: bool  # written in Latin letters (the only script the word lists and the model know)
    sentence_start: bool  # last: every field before it depends only on the word (tokenize caches them)

    @property
    def unknown(self) -> bool:
        """Not an English word we know and not a known name: in the right slot, a name."""
        return not (self.common or self.given or self.surname or self.name_word) and len(self.key) > 2

    @property
    def known_name(self) -> bool:
        return self.given or self.surname

    def name_like(self, after_cue: bool) -> bool:
        """Could be (part of) a name. After a cue ("my sister X") a name that is also a word counts too."""
        if self.acronym and not self.known_name:  # "TIPP", "ASAP": acronyms, not names
            return False
        if self.key in NON_PII_TERMS:  # "my friend Jan", "my sister May"
            return after_cue and self.capitalised and (self.given or self.name_word)
        if len(self.key) < 2:
            return False
        if self.key in _FUNCTION_WORDS:  # "talk to Will" still names someone
            return self.capitalised and not self.sentence_start
        return self.known_name or self.unknown or self.capitalised and not self.sentence_start or (
            after_cue and self.name_word
        )


def _is_town(key: str, lexicon_names: frozenset[str]) -> bool:
    return any(
        key.endswith(suffix) and len(key) - len(suffix) >= 3 and key[: -len(suffix)] in lexicon_names
        for suffix in TOWN_SUFFIXES
    )


class _WordInfo(NamedTuple):
    key: str
    given: bool
    surname: bool
    name_word: bool
    family_name_word: bool
    common: bool
    derived: bool  # everyday only by an ending or as a compound: a capitalised one may well be a name
    place: bool


def _compound(key: str, common_words: frozenset[str], *, shortest_first: int = 4) -> bool:
    """ "worksheet", "wellbeing": two everyday words of 4 letters or more written as one ("newlines": a
    first word of 3 letters too, for words no name list holds)."""
    return any(
        key[:cut] in common_words and key[cut:] in common_words and key[cut:] not in TOWN_SUFFIXES
        and key[:cut] != key[cut:]
        for cut in range(shortest_first, len(key) - 3)
        if cut >= 4 or len(key) - cut >= 5  # "new|lines" but not "sit|hole" (Sithole, a family name)
    )


_INFLECTIONS = ("s", "es", "ed", "d", "ing", "er", "ers", "ly")


def _inflected(key: str, common_words: frozenset[str]) -> bool:
    """ "journaling", "carers": an everyday word with an ending the word list leaves out."""
    return any(
        key.endswith(ending) and len(key) - len(ending) >= 3
        and (key[: -len(ending)] in common_words or key[: -len(ending)] + "e" in common_words)
        for ending in _INFLECTIONS
    )


@lru_cache(maxsize=1 << 16)
def _word_info(word: str) -> _WordInfo:
    """What the word lists say about a word (already without a possessive "'s"); cached, words recur."""
    lexicon = load_lexicon()
    key = fold(word).replace("’", "'")
    parts = re.split(r"['-]", key)
    contraction = "'" in key and parts[-1] in _CONTRACTION_ENDINGS
    key = key.replace("'", "")
    in_names = key in lexicon.names or len(parts) > 1 and all(part in lexicon.names for part in parts)
    double_barrelled = len(parts) > 1 and in_names and not contraction  # "parsons-smith" is a surname
    listed = key in lexicon.common_words or contraction or not double_barrelled and all(
        part in lexicon.common_words for part in parts
    )
    derived = not listed and not double_barrelled and (
        _compound(key, lexicon.common_words, shortest_first=4 if in_names else 3)
        or not in_names and _inflected(key, lexicon.common_words)
    )
    common = listed or derived
    return _WordInfo(
        key=key,
        given=in_names and not common and key in lexicon.given_names,
        surname=in_names and not common and key not in lexicon.given_names,
        name_word=in_names and common and key not in _FUNCTION_WORDS,
        family_name_word=common and key in lexicon.surnames and key not in _FUNCTION_WORDS,
        common=common,
        derived=derived,
        place=(key in PLACES and key not in PLACES_THAT_ARE_WORDS) or (not common and _is_town(key, lexicon.names)),
    )


@lru_cache(maxsize=1 << 16)
def _word_token(word: str) -> tuple:
    """Token's fields from key to latin, in its order: what depends only on the word as written; cached, words
    recur."""
    info = _word_info(word.casefold())
    capitalised = word[0].isupper() and not (len(word) > 1 and word.isupper())
    return (info.key, capitalised, len(word) > 1 and word.isupper(), info.given, info.surname, info.name_word,
            info.family_name_word, info.common and not (info.derived and capitalised), info.place,
            bool(_LATIN.fullmatch(word)))


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    previous_end = 0
    for match in _TOKEN.finditer(text):
        word = match.group()
        start, end = match.span()
        if word[-2:] in ("'s", "’s", "'S") and len(word) > 2:
            word, end = word[:-2], end - 2
        # A single space between two words ends no sentence: the search is skipped for most words.
        sentence_start = not tokens or (start - previous_end != 1 or text[previous_end] != " ") and bool(
            _SENTENCE_END.search(text, previous_end, start))
        tokens.append(Token(start, end, *_word_token(word), sentence_start))
        previous_end = match.end()
    return tokens


def _extend_name(tokens: list[Token], first: int, limit: int = 4) -> int:
    """Index after the name starting at first: surname-like words and particles join it ("sarah okafor",
    "Yara van Herstal", "zita ó raifearta")."""
    last = first + 1
    while last < len(tokens) and last - first < limit and tokens[last].start - tokens[last - 1].end <= 1:
        word = tokens[last]
        if word.sentence_start:
            break
        if word.key in _PARTICLES and last + 1 < len(tokens) and tokens[last + 1].name_like(after_cue=False):
            last += 2
            continue
        legal_form = word.acronym and len(word.key) <= 4 and word.key not in NON_PII_TERMS  # "Ionescu SPI"
        if not (word.name_like(after_cue=False) or legal_form or word.family_name_word and _ends_phrase(tokens, last)):
            break
        last += 1
    return last


def _ends_phrase(tokens: list[Token], index: int) -> bool:
    """Nothing but a function word or a verb follows ("louise brown and", "leonard miller said")."""
    following = tokens[index + 1] if index + 1 < len(tokens) else None
    return following is None or following.start - tokens[index].end > 1 or following.key in _FUNCTION_WORDS or (
        following.key in _PERSON_AFTER
    )


def _extend_back(tokens: list[Token], first: int, floor: int) -> int:
    """First index of a name ending at tokens[first] whose earlier words no rule claimed ("pavla poláková said")."""
    while first > floor and tokens[first].start - tokens[first - 1].end <= 1 and not tokens[first].sentence_start:
        word = tokens[first - 1]
        if not (word.unknown or word.known_name or word.name_word) or word.key in _FUNCTION_WORDS or (
            word.key in _RELATIONS or word.key in _TITLES  # "my mate [gustaf]": the cue is not the name
        ):
            break
        first -= 1
    return first


class _Cue(NamedTuple):
    label: str
    strong: bool  # strong cues ("my sister", "Dr") also accept names that are everyday words ("Rose")


def _cue(tokens: list[Token], index: int) -> _Cue | None:
    """What the words around tokens[index] say it is, or None when they say nothing."""
    if index + 2 < len(tokens) and tokens[index + 1].key == "from" and tokens[index + 2].key in _PLACES_PEOPLE_MEET:
        return _Cue("PERSON", strong=True)
    before = tokens[index - 1].key if index else ""
    two_before = tokens[index - 2].key if index > 1 else ""
    if before in _TITLES or before in _RELATIONS or before in _NAMING or (
        before in ("its", "is") and two_before in _GREETINGS
    ):
        return _Cue("PERSON", strong=True)
    if before in _PLACE_BEFORE or (before == "to" and two_before in _MOVE_VERBS) or (
        before == "of" and two_before in _AREA_WORDS
    ):
        return _Cue("LOCATION", strong=False)
    if before in ("at", "for", "by") and two_before in _ORG_CUES:
        return _Cue("ORGANIZATION", strong=False)
    if before in _PERSON_BEFORE:
        return _Cue("PERSON", strong=False)
    if before == "at":
        return _Cue("ORGANIZATION", strong=False)
    return None


def _joined(text: str, left: Token, right: Token) -> bool:
    """Only spaces and the punctuation found inside organisation names lie between the two words."""
    return right.start - left.end <= 4 and not text[left.end:right.start].strip(" ,&()")


def _suffixed_names(tokens: list[Token], text: str) -> list[Span]:
    """Organisations and streets named by their last word: "Oakwood Surgery", "Smith Ltd", "Debra Forges",
    "Křížová Žáková v.o.s."; and "PT Widodo" style prefixes."""
    spans = []
    for index, token in enumerate(tokens):
        is_org = token.key in _ORG_SUFFIXES
        is_street = token.key in STREET_TYPES and (
            token.key in STRONG_STREET_TYPES or token.capitalised or index and tokens[index - 1].known_name
        )
        if token.key in _ORG_PREFIXES and index + 1 < len(tokens) and tokens[index + 1].name_like(after_cue=False):
            end_index = _extend_name(tokens, index + 1)
            spans.append(Span(token.start, tokens[end_index - 1].end, "ORGANIZATION", SUFFIX_PRIORITY))
        if not (is_org or is_street):
            continue
        first, named = index, False
        while first > 0 and index - first < 5 and _joined(text, tokens[first - 1], tokens[first]):
            word = tokens[first - 1]
            if word.name_like(after_cue=False) or is_org and word.name_word:
                named = named or word.key not in _ORG_SUFFIXES
            elif not (word.key in _ORG_WORDS or word.key in _ORG_SUFFIXES or word.key in _PLACE_PREFIXES):
                break
            first -= 1
        while first < index and tokens[first].key in _ORG_WORDS:
            first += 1
        if named:
            spans.append(Span(tokens[first].start, token.end, "ORGANIZATION" if is_org else "ADDRESS", SUFFIX_PRIORITY))
    return spans


def _firm_names(tokens: list[Token], text: str) -> list[Span]:
    """ "Knowles, Jones and Wheeler", "Yahiaoui & Noui": names joined the way firms name themselves (a list
    of first names only, "Sarah, Priya and Tom", stays three people)."""
    spans = []
    for index in range(len(tokens) - 2):
        parts, cursor = [tokens[index]], index
        while cursor + 1 < len(tokens) and text[tokens[cursor].end:tokens[cursor + 1].start] == ", ":
            cursor += 1
            parts.append(tokens[cursor])
        gap = text[tokens[cursor].end:tokens[cursor + 1].start] if cursor + 1 < len(tokens) else ""
        if gap == " & " or (gap == " " and tokens[cursor + 1].key == "and" and len(parts) >= 2):
            last = cursor + (1 if gap == " & " else 2)
            if last < len(tokens) and text[tokens[last - 1].end:tokens[last].start] in (" ", " & "):
                parts.append(tokens[last])
                surname_like = sum(part.surname or part.unknown or part.name_word for part in parts)
                if surname_like and all(part.known_name or part.unknown or part.name_word for part in parts):
                    spans.append(Span(parts[0].start, parts[-1].end, "ORGANIZATION", SUFFIX_PRIORITY))
    return spans


def find_names(tokens: list[Token], text: str) -> list[Span]:
    """Person, place, organisation and street-name spans that the rules can justify."""
    spans = _suffixed_names(tokens, text) + _firm_names(tokens, text)
    index = claimed = 0
    while index < len(tokens):
        token = tokens[index]
        end_index, first = index + 1, index
        label, priority = None, CUE_PRIORITY
        cue = _cue(tokens, index)
        if token.place and (not token.common or token.capitalised and cue and cue.label == "LOCATION"):
            label = "LOCATION"
        elif not token.latin:
            # Another script: the English word lists know none of its words, so only an English cue ("I told
            # 王伟", "my friend Алексей") or a capital inside a sentence of a cased script marks a name; a
            # sentence in Arabic, Hebrew or Russian is not a list of people.
            if cue or token.capitalised and not token.sentence_start:
                label = cue.label if cue else "PERSON"
        elif token.name_like(after_cue=bool(cue and cue.strong)) and (
            token.known_name or cue is not None or _followed_by_person_verb(tokens, index)
            or _unknown_in_person_slot(tokens, index, text)
        ):
            label = cue.label if cue and cue.label != "PERSON" and not token.given else "PERSON"
            first, end_index = _extend_back(tokens, index, claimed), _extend_name(tokens, index)
        elif token.capitalised and token.unknown and (cue or not token.sentence_start):
            label, priority = (cue.label, CUE_PRIORITY) if cue else ("PERSON", PROPER_NOUN_PRIORITY)
            first, end_index = _extend_back(tokens, index, claimed), _extend_name(tokens, index)
        if label:
            start = tokens[first].start
            prefix = tokens[first - 1] if first else None
            if prefix and prefix.key in _PLACE_PREFIXES and prefix.capitalised == token.capitalised and (
                text[prefix.end:token.start] == " "
            ):
                start, label = prefix.start, "LOCATION" if label != "ORGANIZATION" else label
            end = tokens[end_index - 1].end
            if legal_form := _DOTTED_LEGAL_FORM.match(text, end):
                end, label = legal_form.end(), "ORGANIZATION"
            spans.append(Span(start, end, label, priority))
            index = claimed = end_index
        else:
            index += 1
    return spans


def _unknown_in_person_slot(tokens: list[Token], index: int, text: str) -> bool:
    """ "ugh kwame again", "farzaneh: you ok?", "found out suhad lied": a word no list holds, shaped like a name,
    where a clause puts a person (the words around it, or a sentence of its own before a colon)."""
    token = tokens[index]
    if not (token.unknown and token.latin) or name_score(token.key) < _NAME_SHAPE_MIN:
        return False
    previous = tokens[index - 1] if index and not token.sentence_start else None
    following = tokens[index + 1] if index + 1 < len(tokens) and not tokens[index + 1].sentence_start else None
    if previous is not None and previous.key in _DETERMINERS:  # "the app logged": a thing, not a person
        return False
    if previous is not None and previous.key in _CLAUSE_OPENERS | _PREPOSITIONS | _AUXILIARIES:
        return True
    if following is None:  # "farzaneh: you ok?" names the person spoken to; "dob: 1/2/90" labels a value
        return token.sentence_start and text[token.end:token.end + 1] in (":", ",", "") and not re.match(
            r"[:,]?\s*\d", text[token.end:])
    return following.key in _VERBS_AFTER or (
        following.common and following.key.endswith("ed") and len(following.key) > 3  # "X lied", "X moved"
    ) or text[token.end:following.start].strip() in (":", ",")


def _followed_by_person_verb(tokens: list[Token], index: int) -> bool:
    """ "ngozi said", "Charity came round", "Hope Ogunleye": what follows shows the word names a person."""
    token = tokens[index]
    following = tokens[index + 1] if index + 1 < len(tokens) and not tokens[index + 1].sentence_start else None
    if following is None:
        return False
    if token.unknown:
        after = tokens[index + 2].key if index + 2 < len(tokens) else ""
        return following.key in _PERSON_AFTER or following.key == "and" and after in ("i", "me")  # "X and i"
    return token.name_word and token.capitalised and (
        following.key in _SPEECH_VERBS or following.capitalised and (following.surname or following.unknown)
    )


def needs_model(tokens: list[Token], covered: list[Span]) -> bool:
    """True when a capitalised word is left that neither the rules nor the word lists explain."""
    spans = sorted(covered)
    for token in tokens:
        if not token.capitalised or token.key in NON_PII_TERMS or token.key == "i":
            continue
        if token.sentence_start and token.common and not token.name_word:
            continue
        if any(span.start <= token.start and token.end <= span.end for span in spans):
            continue
        return True
    return False


MODEL_PRIORITY = 1
_MODEL_LABELS = {"PERSON": "PERSON", "ORG": "ORGANIZATION", "GPE": "LOCATION", "LOC": "LOCATION", "FAC": "LOCATION"}


def model_span(tokens: list[Token], start: int, end: int, model_label: str) -> Span | None:
    """The span for an entity the NER model found, or None when it is a type or word we keep.

    The model tags "NHS", "CBT", "Monday" or a capitalised "Anxiety" now and then, and sometimes takes in
    a neighbouring word ("Acme Ltd near"): edge words that cannot be part of a name are trimmed, and an
    entity with no word that could be a name is dropped.
    """
    label = _MODEL_LABELS.get(model_label)
    if label is None:
        return None
    inside = [token for token in tokens if start <= token.start and token.end <= end]
    first, last = 0, len(inside)
    while first < last and not _entity_word(inside[first]):
        first += 1
    while last > first and not _entity_word(inside[last - 1]):
        last -= 1
    if not any(
        token.name_like(after_cue=True) and (token.latin or token.capitalised) for token in inside[first:last]
    ):  # the English model reads a lower-case word of another script ("очень") as a name at random
        return None
    if first:
        start = inside[first].start
    if last < len(inside):
        end = inside[last - 1].end
    return Span(start, end, label, MODEL_PRIORITY)


def _entity_word(token: Token) -> bool:
    if token.key in _TITLES:  # "Dr [PERSON_x]" keeps the title, as the rules do
        return False
    return token.capitalised or token.name_like(after_cue=True) or not token.common
