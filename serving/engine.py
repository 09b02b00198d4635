"""Continuous batching for the local chat model: concurrent replies share each forward pass.

One engine per loaded model, and one engine thread that owns it: requests queue up from any thread (the
asyncio front awaits them), and between two decoding steps the engine lets the waiting ones join the running
batch and lets the finished ones leave, as vLLM and TGI do. A joiner's context is run once (prefill, several
joiners left-padded together) and its key/value cache is then merged into the batch's; every decoding step
then feeds one token per sequence. On a CPU a decoding step costs about one read of the weights whatever the
batch size, so four sequences decode in about the time of one.

The batch's caches are left-padded to a common length; the attention mask hides the padding and each row
carries its own positions, so a sequence's reply is the one it would get alone (up to float rounding).

Hot swap: a swapped-out model keeps its engine until its last sequence has finished (the requests hold the
ChatModel, and so its engine, until they end); new requests go to the new model's engine.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from learnstream.metrics import CHAT_BATCH_SIZE, CHAT_TOKENS, CHAT_TTFT_SECONDS
from serving.decoding_step import decoding_step
from serving.generation import GenerationSettings, context_ids
from serving.holders import release_memory
from serving.thread_choice import ThreadChoice, thread_counts

log = logging.getLogger(__name__)

MAX_BATCH = 8  # sequences decoded together; more would wait for a slot (memory and step time grow with it)


@dataclass(eq=False)
class _Sequence:
    context: list[int]
    max_new_tokens: int
    streamer: Any  # transformers' streamer protocol (put, end), or None
    future: Future
    submitted: float
    tokens: list[int] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)  # of each reply token, from the raw logits


class GenerationEngine:
    """Replies to conversations, batched; submit() from any thread, reply() from the event loop.

    The engine thread starts with the first request, from the requester's thread: a thread started from the
    holder's niced loader would inherit its low priority. warm_up() runs in the caller's thread before that.
    threads: the torch thread counts the engine chooses among, step by step (serving/thread_choice.py); by
    default 1, 2, 4, ... up to the cores the process may use.
    """

    def __init__(self, model: Any, tokenizer: Any, settings: GenerationSettings, *,
                 max_batch: int = MAX_BATCH, threads: Sequence[int] | None = None) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos token to separate turns")
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.max_batch = max_batch
        self.thread_choice = ThreadChoice(thread_counts() if threads is None else threads)
        self._forward = decoding_step(model)
        self._eos = tokenizer.eos_token_id
        config = model.generation_config
        self._suppress = list(getattr(config, "suppress_tokens", None) or [])
        self._begin_suppress = list(getattr(config, "begin_suppress_tokens", None) or [])
        self._waiting: deque[_Sequence] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._batch: _Batch | None = None

    # ---- requests ---------------------------------------------------------------------------------------------

    def submit(self, history: Sequence[str], *, streamer: Any = None,
               max_new_tokens: int | None = None) -> Future:
        """A future of (reply, confidence) for history, whose last turn is the user's message (see
        generation.generate_reply: same context, sampling and confidence). Cancelling the future frees its
        place in the batch at the next step."""
        if self._closed:  # checked again below, under the lock; a closed engine has let its model go
            raise RuntimeError("the generation engine is closed")
        limit = self.settings.max_new_tokens if max_new_tokens is None else max_new_tokens
        context = context_ids(self.model, self.tokenizer, list(history), settings=self.settings)
        sequence = _Sequence(context, limit, streamer, Future(), time.monotonic())
        with self._wake:
            if self._closed:
                raise RuntimeError("the generation engine is closed")
            self._waiting.append(sequence)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="chat-engine", daemon=True)
                self._thread.start()
            self._wake.notify()
        return sequence.future

    async def reply(self, history: Sequence[str], *, streamer: Any = None) -> tuple[str, float]:
        """submit() awaited; a cancelled caller (a timeout, a client gone) leaves the batch."""
        return await asyncio.wrap_future(self.submit(history, streamer=streamer))

    def warm_up(self, tokens: int) -> None:
        """One short reply in the calling thread, so the first request does not pay for lazy initialisation."""
        sequence = _Sequence(context_ids(self.model, self.tokenizer, ["hello"], settings=self.settings), tokens,
                             None, Future(), time.monotonic())
        self._waiting.append(sequence)
        while not sequence.future.done():
            self._step(measured=False)  # the caller's thread: its thread count and first-call times are not ours
        sequence.future.result()  # a model that cannot reply fails its load (the holder keeps the old one)

    def close(self) -> None:
        """Stop the engine thread once it has finished what it was given; it then lets the model go and hands
        its memory back (never waited for here: this runs on the event loop when a swapped-out model goes)."""
        with self._wake:
            self._closed = True
            self._wake.notify()

    # ---- the engine thread ------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._waiting and self._batch is None and not self._closed:
                    self._wake.wait()
                if self._closed and not self._waiting and self._batch is None:
                    break
            self._step()
        self.model = self.tokenizer = self._forward = None  # the holder may have trimmed the heap before this thread let go
        release_memory()

    def _step(self, *, measured: bool = True) -> None:
        """Let waiting sequences join, then decode one token for every sequence in the batch. measured: the
        decoding runs with the thread count self.thread_choice picks, and tells it how long it took."""
        import torch

        try:
            with torch.inference_mode():
                self._admit()
                if self._batch is not None:
                    self._decode(measured=measured)
        except Exception as error:  # the model's failure fails the batch's requests, never the engine
            log.error("chat engine: a step failed (%s); the requests in it fail", type(error).__name__)
            if self._batch is not None:
                for sequence in self._batch.sequences:
                    _fail(sequence, error)
            self._batch = None

    def _admit(self) -> None:
        room = self.max_batch - (0 if self._batch is None else len(self._batch.sequences))
        joiners: list[_Sequence] = []
        with self._wake:
            while self._waiting and len(joiners) < room:
                sequence = self._waiting.popleft()
                if not sequence.future.cancelled():
                    joiners.append(sequence)
        if not joiners:
            return
        try:
            joined, tokens, log_probs = self._prefill(joiners)
        except Exception as error:  # only the joiners fail: the running batch's state is untouched
            log.error("chat engine: a prefill failed (%s); its requests fail", type(error).__name__)
            for sequence in joiners:
                _fail(sequence, error)
            return
        joined.keep([self._advance(sequence, token, log_prob, first=True)
                     for sequence, token, log_prob in zip(joined.sequences, tokens, log_probs)])
        if joined.sequences:
            self._batch = joined if self._batch is None else self._batch.merged(joined)

    def _prefill(self, joiners: list[_Sequence]) -> tuple["_Batch", list[int], list[float]]:
        """The joiners' contexts run as one left-padded batch, and each one's first token."""
        import torch

        device = self.model.device
        length = max(len(sequence.context) for sequence in joiners)
        ids = torch.full((len(joiners), length), self._eos, dtype=torch.long, device=device)
        mask = torch.zeros((len(joiners), length), dtype=torch.long, device=device)
        for row, sequence in enumerate(joiners):  # left padding: every row's last token is its newest
            ids[row, length - len(sequence.context):] = torch.tensor(sequence.context, device=device)
            mask[row, length - len(sequence.context):] = 1
            if sequence.streamer is not None:
                sequence.streamer.put(torch.tensor([sequence.context]))  # the streamer skips the prompt
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        output = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                            logits_to_keep=1)
        # The repetition penalty counts the context, as generate() does (a sum: padding must not unmark a token).
        seen = torch.zeros((len(joiners), output.logits.shape[-1]), dtype=torch.long, device=device)
        seen = seen.scatter_add_(1, ids, mask) > 0
        batch = _Batch(joiners, output.past_key_values, mask, mask.sum(-1), seen)
        return batch, *self._sample(output.logits[:, -1, :], batch, first=True)

    def _decode(self, *, measured: bool) -> None:
        import torch

        batch = self._batch
        batch.keep([not sequence.future.cancelled() for sequence in batch.sequences])
        if not batch.sequences:
            self._batch = None
            return
        rows = len(batch.sequences)
        CHAT_BATCH_SIZE.observe(rows)
        last = torch.tensor([[sequence.tokens[-1]] for sequence in batch.sequences], device=batch.mask.device)
        batch.mask = torch.cat([batch.mask, torch.ones_like(last)], dim=1)
        if measured:
            threads = self.thread_choice.next(rows)
            if torch.get_num_threads() != threads:  # kept per OS thread; the prefills run with it too
                torch.set_num_threads(threads)
        started = time.perf_counter()
        logits = self._forward(last, batch.mask, batch.positions[:, None], batch.cache)
        if measured:
            self.thread_choice.observe(threads, rows, time.perf_counter() - started)
        batch.positions = batch.positions + 1
        tokens, log_probs = self._sample(logits, batch, first=False)
        batch.keep([self._advance(sequence, token, log_prob, first=False)
                    for sequence, token, log_prob in zip(batch.sequences, tokens, log_probs)])
        self._batch = batch if batch.sequences else None

    def _sample(self, logits: Any, batch: "_Batch", *, first: bool) -> tuple[list[int], list[float]]:
        """The next token of each row, and its log-probability under the raw logits (generate_reply's
        confidence). Processing as generate() does: suppressed tokens, repetition penalty, then temperature,
        top-k and top-p when sampling."""
        import torch

        settings = self.settings
        logits = logits.float()
        raw = torch.log_softmax(logits, dim=-1)
        scores = logits.clone()
        if self._suppress:
            scores[:, self._suppress] = -math.inf
        if first and self._begin_suppress:
            scores[:, self._begin_suppress] = -math.inf
        if settings.repetition_penalty != 1.0:
            penalised = torch.where(scores < 0, scores * settings.repetition_penalty,
                                    scores / settings.repetition_penalty)
            scores = torch.where(batch.seen, penalised, scores)
        if settings.do_sample:
            scores = scores / settings.temperature
            if 0 < settings.top_k < scores.shape[-1]:
                kth = torch.topk(scores, settings.top_k, dim=-1).values[:, -1:]
                scores = scores.masked_fill(scores < kth, -math.inf)
            if settings.top_p < 1.0:
                ordered, order = torch.sort(scores, descending=False, dim=-1)
                tail = ordered.softmax(dim=-1).cumsum(dim=-1) <= 1 - settings.top_p
                tail[:, -1] = False  # the likeliest token always stays
                scores = scores.masked_fill(tail.scatter(1, order, tail), -math.inf)
            tokens = torch.multinomial(scores.softmax(dim=-1), 1)
        else:
            tokens = scores.argmax(dim=-1, keepdim=True)
        batch.seen.scatter_(1, tokens, True)
        return tokens[:, 0].tolist(), raw.gather(1, tokens)[:, 0].tolist()

    def _advance(self, sequence: _Sequence, token: int, log_prob: float, *, first: bool) -> bool:
        """Record the sequence's new token; False (and its reply delivered) once it has finished."""
        now = time.monotonic()
        if first:
            CHAT_TTFT_SECONDS.observe(now - sequence.submitted)
        if token == self._eos:
            self._finish(sequence)
            return False
        CHAT_TOKENS.inc()
        sequence.tokens.append(token)
        sequence.log_probs.append(log_prob)
        if sequence.streamer is not None:
            import torch

            sequence.streamer.put(torch.tensor([token]))
        if len(sequence.tokens) >= sequence.max_new_tokens:
            self._finish(sequence)
            return False
        return True

    def _finish(self, sequence: _Sequence) -> None:
        if sequence.streamer is not None:
            sequence.streamer.end()
        reply = self.tokenizer.decode(sequence.tokens, skip_special_tokens=True).strip()
        result = ((reply, math.exp(sum(sequence.log_probs) / len(sequence.log_probs))) if reply
                  else (self.settings.fallback_reply, 0.0))
        try:
            sequence.future.set_result(result)
        except InvalidStateError:  # cancelled meanwhile: nobody is waiting
            pass


@dataclass(eq=False)
class _Batch:
    """The sequences being decoded together and their shared, left-padded state (one row each)."""

    sequences: list[_Sequence]
    cache: Any  # transformers DynamicCache: per layer, keys and values of shape [rows, heads, columns, head_dim]
    mask: Any  # [rows, columns]: 1 for a real token, 0 for left padding
    positions: Any  # [rows]: the position of each row's next token (its count of real tokens)
    seen: Any  # [rows, vocabulary]: tokens already in each row's context (for the repetition penalty)

    def keep(self, rows: list[bool]) -> None:
        """Drop the rows marked False, and the padding columns no remaining row needs."""
        if all(rows):
            return
        import torch

        self.sequences = [sequence for sequence, kept in zip(self.sequences, rows) if kept]
        if not self.sequences:
            return
        index = torch.tensor([row for row, kept in enumerate(rows) if kept], device=self.mask.device)
        self.mask, self.positions, self.seen = self.mask[index], self.positions[index], self.seen[index]
        start = int(self.mask.any(dim=0).int().argmax())  # the first column some row still uses
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[index, :, start:], layer.values[index, :, start:]

    def merged(self, other: "_Batch") -> "_Batch":
        """This batch and other as one, the shorter left-padded to the longer."""
        import torch
        import torch.nn.functional as F

        width = max(self.mask.shape[1], other.mask.shape[1])

        def pad(tensor: Any, columns: int, dim_from_end: int) -> Any:
            grow = width - columns
            return tensor if grow == 0 else F.pad(tensor, (0, 0) * dim_from_end + (grow, 0))

        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            for name in ("keys", "values"):
                setattr(mine, name, torch.cat([pad(getattr(mine, name), self.mask.shape[1], 1),
                                               pad(getattr(theirs, name), other.mask.shape[1], 1)]))
        self.mask = torch.cat([pad(self.mask, self.mask.shape[1], 0), pad(other.mask, other.mask.shape[1], 0)])
        self.positions = torch.cat([self.positions, other.positions])
        self.seen = torch.cat([self.seen, other.seen])
        self.sequences = self.sequences + other.sequences
        return self


def _fail(sequence: _Sequence, error: Exception) -> None:
    try:
        sequence.future.set_exception(error)
    except InvalidStateError:
        pass
