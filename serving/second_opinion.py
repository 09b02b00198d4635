"""A second opinion on uncertain messages from the remote model: it may escalate a turn, never clear one.

When a remote chat API is configured, a message the classifier scores between a floor (by default its check-in
threshold) and its crisis threshold, which the rules did not flag, is asked of the remote, with a short timeout:
is this a crisis? The remote gets the message anonymized exactly as a remote chat request is (the same
RequestRedactor: names, numbers and addresses become placeholders new for each request), never the raw text, and
no conversation history. If it answers CRISIS, the turn becomes a crisis flag of layer "remote"; any other answer,
a timeout or an error leaves the verdict as it was. So a check-in stays at least a check-in, and the layers'
recall can only grow.
"""

from __future__ import annotations

import logging
import re

from serving import safety, safety_classifier
from serving.backends import BackendError, RemoteBackend

log = logging.getLogger(__name__)

LAYER = "remote"

SCREENING_PROMPT = (
    "You screen messages sent to a mental health support app. Names, numbers and places in them are replaced by "
    "placeholders such as [PERSON_3f2a]. Answer with one word: CRISIS if the message suggests a risk of suicide, "
    "self-harm, an overdose, or violence or abuse against the writer, now or soon; otherwise OK."
)
SCREENING_MAX_TOKENS = 3  # one word is asked for; a longer answer is cut, not waited for


def says_crisis(answer: str) -> bool:
    """Whether the remote's answer escalates: its first word is CRISIS (any case, any punctuation around it)."""
    words = re.findall(r"[a-z]+", answer.casefold())
    return bool(words) and words[0] == "crisis"


class SecondOpinion:
    """review(message, verdict) -> the verdict, escalated when the remote says CRISIS about an uncertain message.

    remote: a RemoteBackend set up with SCREENING_PROMPT (started and stopped by its owner). floor: the lowest
    classifier score asked about; None: the classifier's check-in threshold.
    """

    def __init__(self, *, remote: RemoteBackend, floor: float | None = None,
                 classifier: safety_classifier.SafetyClassifier | None = None) -> None:
        self.remote = remote
        self._classifier = classifier or safety_classifier.default()
        self._floor = self._classifier.thresholds["check_in"] if floor is None else floor
        self._crisis = self._classifier.thresholds["crisis"]

    def uncertain(self, verdict: safety.SafetyVerdict) -> bool:
        """Neither the rules nor a crisis score decided it, and the score is at least the floor."""
        return verdict.layer in (None, "classifier") and self._floor <= verdict.score < self._crisis

    async def review(self, message: str, verdict: safety.SafetyVerdict) -> safety.SafetyVerdict:
        if not self.uncertain(verdict):
            return verdict
        try:
            answer = await self.remote.reply(history=(), message=message)
        except BackendError as error:  # the verdict stands: a missing second opinion changes nothing
            log.warning("safety second opinion unavailable: %s", error)
            return verdict
        if not says_crisis(answer.text):
            return verdict
        # Below the check-in threshold the verdict has no category yet: the classifier's most likely one.
        category = verdict.category or self._classifier.score(safety.normalize(message)).category
        return safety.SafetyVerdict(crisis=True, category=category, score=verdict.score, layer=LAYER)
