"""Crisis detection: every crisis phrasing is flagged, at most 2% of ordinary therapy messages are."""

import pytest

from bench.safety_phrases import ABUSE, CRISIS, ORDINARY, SELF_HARM, SUICIDE
from serving.safety import CRISIS_REPLY, assess, normalize, rules


@pytest.mark.parametrize("message", CRISIS)
def test_every_crisis_phrasing_is_flagged(message: str) -> None:
    assert assess(message).crisis, normalize(message)


@pytest.mark.parametrize(
    ("messages", "category"), [(SUICIDE, "suicide"), (SELF_HARM, "self_harm"), (ABUSE, "abuse")]
)
def test_categories(messages: list[str], category: str) -> None:
    categories = [assess(message).category for message in messages]
    assert categories.count(category) / len(messages) >= 0.9, list(zip(messages, categories))


def test_ordinary_messages_are_rarely_flagged() -> None:
    assert len(CRISIS) >= 40 and len(ORDINARY) >= 100
    flagged = [message for message in ORDINARY if rules(message) is not None]  # the classifier trains on these
    assert len(flagged) <= 0.02 * len(ORDINARY), flagged


def test_ordinary_verdict_has_no_category() -> None:
    verdict = assess("I had a lovely walk today", layers=("rules",))
    assert not verdict.crisis and verdict.category is None


def test_crisis_reply_names_uk_resources() -> None:
    for resource in ("Samaritans", "116 123", "NHS 111", "999", "SHOUT", "85258"):
        assert resource in CRISIS_REPLY


def test_long_message_is_assessed_quickly() -> None:
    import time

    message = "I had a long day at work and the meeting ran over again " * 400 + "and I want to kill myself"
    started = time.perf_counter()
    assert assess(message).category == "suicide"
    assert time.perf_counter() - started < 1.0
