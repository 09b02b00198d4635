"""DialoGPT-style reply generation, and the bounded, expiring per-session history it takes as context.

DialoGPT reads a conversation as its turns joined by the end-of-sequence token and continues it with the next
turn, so a reply is whatever the model writes after the last eos, up to the next one.
"""

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class GenerationSettings:
    max_new_tokens: int = 64  # longest reply, in tokens
    do_sample: bool = True  # sample for varied replies; False decodes greedily (reproducible, but repetitive)
    temperature: float = 0.8  # < 1 sharpens the next-token distribution (sampling only)
    top_p: float = 0.9  # nucleus sampling: draw from the smallest token set holding this much probability
    top_k: int = 50  # and from at most this many tokens (sampling only)
    repetition_penalty: float = 1.3  # > 1 discourages tokens already in the context: DialoGPT loops without it
    max_context_tokens: int = 512  # history kept as context; the oldest turns are dropped first
    fallback_reply: str = "I'm here with you. Could you tell me a little more about how you're feeling?"
    # ^ said when the model writes nothing but eos: a reply is never empty


def encode_history(tokenizer, history: Sequence[str], *, max_context_tokens: int) -> list[int]:
    """The turns as token ids, each followed by eos, keeping the newest that fit in max_context_tokens.

    Whole turns are dropped from the left; a newest turn longer than the budget keeps its last tokens.
    """
    eos = tokenizer.eos_token_id
    kept: list[list[int]] = []
    budget = max_context_tokens
    for turn in reversed(history):
        ids = tokenizer.encode(turn, add_special_tokens=False) + [eos]
        if len(ids) > budget:
            if not kept:
                kept.append(ids[-budget:])
            break
        kept.append(ids)
        budget -= len(ids)
    return [token for ids in reversed(kept) for token in ids]


def _position_limit(model) -> int | None:
    config = model.config
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def context_ids(model, tokenizer, history: list[str], *, settings: GenerationSettings) -> list[int]:
    """The token ids a reply to history continues: its newest turns that fit both max_context_tokens and the
    model's positions less max_new_tokens (the reply must fit too)."""
    if not history:
        raise ValueError("history must end with the user's message")
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token to separate turns")
    context_budget = settings.max_context_tokens
    positions = _position_limit(model)
    if positions is not None:
        context_budget = min(context_budget, positions - settings.max_new_tokens)
    if context_budget < 1:
        raise ValueError("max_new_tokens leaves no room for context in the model's positions")
    return encode_history(tokenizer, history, max_context_tokens=context_budget)


def generate_reply(
    model, tokenizer, history: list[str], *, settings: GenerationSettings, streamer=None
) -> tuple[str, float]:
    """The model's reply to history (whose last turn is the user's message) and the model's confidence in it.

    confidence is the geometric mean of the reply tokens' probabilities, exp(mean log p) = 1 / perplexity, in
    [0, 1], taken from the model's raw logits (before temperature, top-k/p and the repetition penalty), so it
    measures how expected the reply was to the model whatever the sampling settings. A fallback reply has
    confidence 0. Synchronous and CPU/GPU bound: run it in a worker thread. streamer: transformers' streamer
    protocol (put, end), given each token as it is generated (serving.streaming.TokenStreamer).
    One sequence at a time through model.generate: serving batches with serving.engine instead, and
    bench/chat.py measures that engine against this.
    """
    import torch  # here, not at the top: serving imports this module without the ml extra (no local chat then)

    context = context_ids(model, tokenizer, history, settings=settings)
    eos = tokenizer.eos_token_id
    input_ids = torch.tensor([context], device=model.device)
    sampling = (
        {"temperature": settings.temperature, "top_p": settings.top_p, "top_k": settings.top_k}
        if settings.do_sample
        else {}  # transformers warns about sampling flags passed to greedy decoding
    )
    with torch.inference_mode():
        output = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),  # one sequence, no padding (see ChatModel.load on pad)
            max_new_tokens=settings.max_new_tokens,
            do_sample=settings.do_sample,
            repetition_penalty=settings.repetition_penalty,
            pad_token_id=eos,
            eos_token_id=eos,
            output_logits=True,
            return_dict_in_generate=True,
            streamer=streamer,
            **sampling,
        )
    new_tokens = output.sequences[0, input_ids.shape[1]:].tolist()
    reply_length = new_tokens.index(eos) if eos in new_tokens else len(new_tokens)
    reply = tokenizer.decode(new_tokens[:reply_length], skip_special_tokens=True).strip()
    if not reply:
        return settings.fallback_reply, 0.0
    log_probs = [
        torch.log_softmax(step_logits[0].float(), dim=-1)[token].item()
        for step_logits, token in zip(output.logits[:reply_length], new_tokens[:reply_length])
    ]
    return reply, math.exp(sum(log_probs) / len(log_probs))


@dataclass(frozen=True, kw_only=True)
class HistorySettings:
    max_turns: int = 10  # utterances kept per session (a user message and a reply are one turn each)
    ttl_seconds: float = 1800.0  # a session idle this long starts afresh: old context is stale and costs memory
    max_sessions: int = 10_000  # beyond this the least recently active sessions are dropped


@dataclass
class _Session:
    turns: deque[str]
    last_active: float


class SessionHistory:
    """Per-session conversation turns, bounded in turns, idle time and number of sessions.

    Sessions are kept in order of last activity, so the expired ones are always at the front: each append
    drops them, and memory stays bounded by max_sessions * max_turns even if nobody reads again.
    Not thread-safe: use it from the event loop.
    """

    def __init__(
        self, *, settings: HistorySettings = HistorySettings(), clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._sessions: OrderedDict[str, _Session] = OrderedDict()

    def get(self, session: str) -> list[str]:
        """The session's turns, oldest first ([] for a new or expired session)."""
        entry = self._sessions.get(session)
        if entry is None:
            return []
        if self._expired(entry, self._clock()):
            del self._sessions[session]
            return []
        return list(entry.turns)

    def append(self, session: str, user_text: str, reply: str) -> None:
        now = self._clock()
        self._drop_expired(now)
        entry = self._sessions.pop(session, None) or _Session(
            turns=deque(maxlen=self._settings.max_turns), last_active=now
        )
        entry.turns.extend((user_text, reply))
        entry.last_active = now
        self._sessions[session] = entry
        while len(self._sessions) > self._settings.max_sessions:
            self._sessions.popitem(last=False)

    def forget(self, session: str) -> None:
        self._sessions.pop(session, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _expired(self, entry: _Session, now: float) -> bool:
        return now - entry.last_active >= self._settings.ttl_seconds

    def _drop_expired(self, now: float) -> None:
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if not self._expired(oldest, now):
                return
            self._sessions.popitem(last=False)
