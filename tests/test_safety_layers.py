"""The layered crisis detector on the corpus's held-out test families, session risk, and robustness to invisible
characters and look-alike letters inside risk words."""

import re
from datetime import datetime

import pytest
from hypothesis import given, settings, strategies as st

from bench import safety as bench_safety
from bench.safety_corpus import CATEGORIES, corpus
from serving import safety
from serving.second_opinion import says_crisis
from serving.session_risk import SessionRisk

# The figures bench/safety.py gives on the whole test split (floors a little under them: the goal of issue 19,
# 0.95 per category and 0.98 overall at FPR <= 0.05, is NOT met yet; these keep it from getting worse).
RECALL_FLOOR, FPR_CEILING, CATEGORY_FLOOR = 0.78, 0.11, 0.35


@pytest.fixture(scope="module")
def layered() -> dict:
    return bench_safety.measure([r for r in corpus() if r["split"] == "test"], ("rules", "classifier"))


def test_corpus_is_split_by_family_and_large_enough() -> None:
    rows = corpus()
    splits_of_family: dict[str, set[str]] = {}
    for row in rows:
        splits_of_family.setdefault(row["family"], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in splits_of_family.values())
    assert sum(r["crisis"] for r in rows) >= 3000 and sum(not r["crisis"] for r in rows) >= 3000
    for category in CATEGORIES:
        families = {r["family"] for r in rows if r["category"] == category}
        assert len(families) >= 20
        assert sum(r["split"] == "test" and r["category"] == category for r in rows) >= 40


def test_held_out_figures_of_the_layers_together(layered: dict) -> None:
    assert layered["recall"] >= RECALL_FLOOR and layered["false_positive_rate"] <= FPR_CEILING
    assert set(layered["recall_by_category"]) == set(CATEGORIES)
    assert all(recall >= CATEGORY_FLOOR for recall in layered["recall_by_category"].values()), layered


def test_layers_together_beat_each_layer_alone() -> None:
    rows = [r for r in corpus() if r["split"] == "test" and r["crisis"]]
    together = bench_safety.measure(rows, ("rules", "classifier"))["recall"]
    assert together >= bench_safety.measure(rows, ("rules",))["recall"]
    assert together >= bench_safety.measure(rows, ("classifier",))["recall"]


RISKY = ["I want to kill myself", "i keep thinking about suicide", "I took an overdose of my tablets",
         "my husband hits me", "I have been cutting my arms again", "i've been stockpiling my pills"]
INVISIBLE = st.sampled_from(["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u034f"])
LOOK_ALIKE = {"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "i": "і", "y": "у", "x": "х", "k": "к"}


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(RISKY), st.data())
def test_invisible_characters_and_look_alike_letters_change_nothing(message: str, data: st.DataObject) -> None:
    chars = list(message)
    for position in data.draw(st.lists(st.integers(0, len(chars) - 1), max_size=6)):
        if chars[position].isalpha():
            if data.draw(st.booleans()) and chars[position] in LOOK_ALIKE:
                chars[position] = LOOK_ALIKE[chars[position]]
            else:
                chars[position] = chars[position] + data.draw(INVISIBLE)
    disguised = "".join(chars)
    assert safety.assess(disguised) == safety.assess(message), disguised


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_any_text_gets_a_verdict(text: str) -> None:
    verdict = safety.assess(text)
    assert 0.0 <= verdict.score <= 1.0 and (verdict.category is None) == (not verdict.crisis)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_only_a_first_word_crisis_escalates(before: str, after: str) -> None:
    answer = f"{before} crisis {after}"
    first = re.findall(r"[a-z]+", before.casefold())
    assert says_crisis(answer) == (not first or first[0] == "crisis")
    assert says_crisis(f"CRISIS{'.' if before else ''} {after}") and not says_crisis(f"not crisis {after}")


def test_the_second_opinion_settings_are_read_from_the_environment_or_refused() -> None:
    from learnstream.config import ConfigError, load_settings

    default = load_settings(env={})
    assert (default.safety_second_opinion, default.safety_second_opinion_timeout_s,
            default.safety_second_opinion_min_score) == (True, 3.0, None)
    env = {"LEARNSTREAM_SAFETY_SECOND_OPINION": "0", "LEARNSTREAM_SAFETY_SECOND_OPINION_MIN_SCORE": "0.02"}
    configured = load_settings(env=env)
    assert (configured.safety_second_opinion, configured.safety_second_opinion_min_score) == (False, 0.02)
    for name, value in (("TIMEOUT_S", "0"), ("MIN_SCORE", "1.5"), ("MIN_SCORE", "high")):
        with pytest.raises(ConfigError, match="(?i)safety_second_opinion"):
            load_settings(env={f"LEARNSTREAM_SAFETY_SECOND_OPINION_{name}": value})


def flag(session: str, ts: str) -> dict:
    return {"schema": "safety.flag.v1", "ts": ts, "session": session, "category": "ideation", "score": 1.0,
            "layer": "rules"}


def test_a_flag_sticks_for_the_configured_time_then_lapses() -> None:
    risk = SessionRisk(sticky_s=3600)
    risk.apply(flag("s", "2026-12-07T10:00:00Z"))
    start = datetime.fromisoformat("2026-12-07T10:00:00+00:00").timestamp()
    assert risk.flagged("s", now=start + 59 * 60) and not risk.flagged("other", now=start)
    assert not risk.flagged("s", now=start + 61 * 60)
    risk.apply(flag("s", "2026-12-07T10:30:00Z"))  # 60 minutes after the LAST flag
    assert risk.flagged("s", now=start + 80 * 60)


def test_a_clinician_clear_ends_it_but_a_later_flag_does_not_get_lost() -> None:
    risk = SessionRisk(sticky_s=3600)
    risk.apply(flag("s", "2026-12-07T10:00:00Z"))
    risk.apply({"schema": "safety.cleared.v1", "ts": "2026-12-07T10:05:00Z", "session": "s"})
    assert not risk.flagged("s")
    risk.apply(flag("s", "2026-12-07T10:10:00Z"))
    risk.apply({"schema": "safety.cleared.v1", "ts": "2026-12-07T10:06:00Z", "session": "s"})  # replayed late
    assert risk.flagged("s", now=risk._last_flag["s"] + 1)  # noqa: SLF001


def test_three_uneasy_turns_whose_scores_add_up_flag_the_session() -> None:
    risk = SessionRisk(sticky_s=3600)
    assert not risk.combined("s", 0.3, 0.9) and not risk.combined("s", 0.3, 0.9)
    assert risk.combined("s", 0.35, 0.9)
    assert not SessionRisk(sticky_s=1).combined("t", 0.1, 0.9)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=8), st.one_of(st.none(), st.text(max_size=30), st.integers())))
def test_malformed_flag_events_raise_value_error_only(event: dict) -> None:
    try:
        SessionRisk(sticky_s=60).apply(event)
    except ValueError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.binary(max_size=200),
                 st.lists(st.dictionaries(st.sampled_from(["text", "crisis", "label", "kind"]),
                                          st.one_of(st.none(), st.booleans(), st.text(max_size=20),
                                                    st.sampled_from(["crisis", "ordinary"]))), max_size=4)
                 .map(lambda lines: b"\n".join(bench_safety.orjson.dumps(line) for line in lines))))
def test_an_external_set_is_read_or_refused_with_a_value_error(tmp_path_factory, content: bytes) -> None:
    path = tmp_path_factory.mktemp("ext") / "set.jsonl"
    path.write_bytes(content)
    try:
        rows = bench_safety.read_external(path)
    except ValueError as exc:
        assert str(path) in str(exc)
    else:
        assert rows and all(isinstance(r["text"], str) and isinstance(r["crisis"], bool) for r in rows)
