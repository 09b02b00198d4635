"""The continuous-batching engine: batched replies equal lone ones; sequences join and leave a running batch."""

from __future__ import annotations

import asyncio
import copy
import gc
import threading
import weakref

import orjson
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

from serving.chat_model import quantized_int8
from serving.cpu_layers import PackedLinear, prepacked
from serving.decoding_step import decoding_step
from serving.engine import GenerationEngine
from serving.generation import GenerationSettings, generate_reply
from tests.test_generation import CORPUS, talkative_model, tokenizer  # noqa: F401 - fixtures
from tests.test_serving_app import ROUTINE, Serve, commit_copy_of_base, serve, template  # noqa: F401 - fixtures

GREEDY = GenerationSettings(do_sample=False, max_new_tokens=12)
HISTORIES = [[CORPUS[0]], CORPUS[:3], [CORPUS[3]], CORPUS[1:5], ["ok"]]  # contexts of unequal lengths


@pytest.fixture
def engine(talkative_model, tokenizer):  # noqa: F811
    engine = GenerationEngine(talkative_model, tokenizer, GREEDY, max_batch=4)
    yield engine
    engine.close()


def alone(model, tokenizer, history, settings=GREEDY):  # noqa: F811
    return generate_reply(model, tokenizer, history, settings=settings)


def test_batched_greedy_replies_equal_each_reply_alone(engine, talkative_model, tokenizer) -> None:  # noqa: F811
    futures = [engine.submit(history) for history in HISTORIES]  # more than max_batch: one waits for a slot
    for history, future in zip(HISTORIES, futures):
        reply, confidence = future.result(timeout=30)
        expected, expected_confidence = alone(talkative_model, tokenizer, history)
        assert reply == expected
        assert confidence == pytest.approx(expected_confidence, rel=1e-3)


class Pieces:
    """A streamer that counts the tokens put after the prompt, and says when it has seen enough."""

    def __init__(self, enough: int) -> None:
        self.tokens: list[int] = []
        self.prompts = 0
        self.ended = False
        self.enough = threading.Event()
        self._needed = enough

    def put(self, value: torch.Tensor) -> None:
        if self.prompts == 0:
            self.prompts = 1
            return
        self.tokens.extend(value.reshape(-1).tolist())
        if len(self.tokens) >= self._needed:
            self.enough.set()

    def end(self) -> None:
        self.ended = True


def test_sequences_join_a_running_batch_and_still_reply_as_alone(engine, talkative_model, tokenizer) -> None:  # noqa: F811
    first = Pieces(enough=3)
    running = engine.submit(HISTORIES[1], streamer=first)
    assert first.enough.wait(timeout=30)
    joiners = [engine.submit(history) for history in (HISTORIES[0], HISTORIES[3])]  # join mid-reply
    assert running.result(timeout=30)[0] == alone(talkative_model, tokenizer, HISTORIES[1])[0]
    for history, future in zip((HISTORIES[0], HISTORIES[3]), joiners):
        assert future.result(timeout=30)[0] == alone(talkative_model, tokenizer, history)[0]
    assert first.ended and 0 < len(first.tokens) <= GREEDY.max_new_tokens


def test_a_cancelled_request_leaves_the_batch_and_the_others_finish(engine, talkative_model, tokenizer) -> None:  # noqa: F811
    watcher = Pieces(enough=2)
    cancelled = engine.submit(HISTORIES[0], streamer=watcher)
    others = [engine.submit(history) for history in HISTORIES[1:3]]
    assert watcher.enough.wait(timeout=30)
    cancelled.cancel()
    for history, future in zip(HISTORIES[1:3], others):
        assert future.result(timeout=30)[0] == alone(talkative_model, tokenizer, history)[0]
    assert len(watcher.tokens) < GREEDY.max_new_tokens  # it stopped early


def test_a_failing_step_fails_its_requests_and_the_engine_goes_on(talkative_model, tokenizer) -> None:  # noqa: F811
    engine = GenerationEngine(talkative_model, tokenizer, GREEDY)
    forward = talkative_model.forward
    talkative_model.forward = lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError("broken"))
    try:
        with pytest.raises(RuntimeError, match="broken"):
            engine.submit(HISTORIES[0]).result(timeout=30)
        with pytest.raises(RuntimeError, match="broken"):  # and a model that cannot reply fails its warm-up
            GenerationEngine(talkative_model, tokenizer, GREEDY).warm_up(2)
    finally:
        talkative_model.forward = forward
    assert engine.submit(HISTORIES[0]).result(timeout=30)[0] == alone(talkative_model, tokenizer, HISTORIES[0])[0]
    thread = engine._thread  # noqa: SLF001
    engine.close()
    thread.join(timeout=10)
    assert not thread.is_alive() and engine.model is None  # the model is let go with the thread
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit(HISTORIES[0])


def test_sampled_replies_are_text_with_confidence_in_unit_interval(talkative_model, tokenizer) -> None:  # noqa: F811
    sampling = GenerationSettings(max_new_tokens=8, temperature=0.7, top_p=0.8, top_k=20)
    engine = GenerationEngine(talkative_model, tokenizer, sampling)
    try:
        for reply, confidence in (future.result(timeout=30) for future in map(engine.submit, HISTORIES)):
            assert reply and 0.0 <= confidence <= 1.0
    finally:
        engine.close()


TEXT = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(["\u200b", "\u3000 \u00a0", "\ufeff"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(histories=st.lists(st.lists(TEXT, min_size=1, max_size=3), min_size=1, max_size=5))
def test_any_conversations_get_a_reply_each(talkative_model, tokenizer, histories) -> None:  # noqa: F811
    engine = GenerationEngine(talkative_model, tokenizer, GenerationSettings(max_new_tokens=3), max_batch=3)
    try:
        for future in [engine.submit(history) for history in histories]:
            reply, confidence = future.result(timeout=30)
            assert isinstance(reply, str) and reply and 0.0 <= confidence <= 1.0
    finally:
        engine.close()


# ---- hot swap under load, over HTTP ----------------------------------------------------------------------------


@pytest.mark.kafka
async def test_swaps_under_concurrent_chat_fail_no_request_and_free_the_old_engine(serve: Serve) -> None:  # noqa: F811
    client, serving = await serve()
    registry, holder = serving.registry, serving.holders["chat"]
    assert any(isinstance(module, PackedLinear) for module in holder.current.model.model.modules())  # fp32, CPU
    commit_copy_of_base(registry)
    answers: list[tuple[int, dict]] = []
    swapping = True

    async def chatter(name: str, stream: bool) -> None:
        turn = 0
        while swapping or turn < 2:
            body = {"session_id": f"{name}-{turn}", "message": ROUTINE, "stream": stream}
            async with client.post("/api/chat", json=body) as response:
                text = await response.text()
                final = orjson.loads(text.rsplit("data: ", 1)[-1]) if stream else orjson.loads(text)
                answers.append((response.status, final))
            turn += 1

    chatters = [asyncio.create_task(chatter(f"c{n}", stream=n % 2 == 1)) for n in range(4)]
    engines = []
    async with asyncio.timeout(120):
        for number in (1, 0, 1, 0):
            engines.append(weakref.ref(holder.current.model.engine))
            assert await holder.swap_to(number)  # returns once the new model is served
            await holder.released()  # the old model's requests have all ended, new ones went to the new model
        swapping = False
        await asyncio.gather(*chatters)
    failed = [(status, final) for status, final in answers if status != 200 or final.get("backend") != "local"]
    assert not failed and len(answers) >= 8
    assert {final["model_version"] for _, final in answers} == {0, 1}
    gc.collect()
    assert all(engine() is None or engine() is holder.current.model.engine for engine in engines)


def test_a_prepacked_model_computes_what_the_plain_one_does(talkative_model, tokenizer) -> None:  # noqa: F811
    packed = prepacked(copy.deepcopy(talkative_model))
    assert not any(type(module) in (Conv1D, torch.nn.Linear) for module in packed.modules())
    ids = torch.tensor([tokenizer.encode(" ".join(CORPUS))])
    with torch.inference_mode():
        plain_logits, packed_logits = (model(input_ids=ids).logits for model in (talkative_model, packed))
    assert torch.allclose(packed_logits, plain_logits, atol=1e-4, rtol=1e-4)
    engine = GenerationEngine(packed, tokenizer, GREEDY)
    try:
        for history, future in [(history, engine.submit(history)) for history in HISTORIES]:
            assert future.result(timeout=30)[0] == alone(talkative_model, tokenizer, history)[0]
    finally:
        engine.close()


def test_int8_model_replies_through_the_engine_and_stays_close_to_fp32(talkative_model, tokenizer) -> None:  # noqa: F811
    quantised = quantized_int8(copy.deepcopy(talkative_model))
    assert not any(isinstance(module, Conv1D) for module in quantised.modules())
    ids = torch.tensor([tokenizer.encode(" ".join(CORPUS))])
    with torch.inference_mode():
        fp32, int8 = (float(model(input_ids=ids, labels=ids).loss) for model in (talkative_model, quantised))
    assert int8 == pytest.approx(fp32, rel=0.02)
    engine = GenerationEngine(quantised, tokenizer, GREEDY)
    try:
        for future in [engine.submit(history) for history in HISTORIES]:
            reply, confidence = future.result(timeout=30)
            assert reply and 0.0 < confidence <= 1.0
    finally:
        engine.close()


def gpt2_with(tokenizer, **config):  # noqa: F811
    torch.manual_seed(1)
    eos = tokenizer.eos_token_id
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                                      bos_token_id=eos, eos_token_id=eos, **config)).eval()


@pytest.mark.parametrize("prepare", [lambda m: m, prepacked, quantized_int8], ids=["plain", "packed", "int8"])
@pytest.mark.parametrize("config", [{}, {"scale_attn_by_inverse_layer_idx": True},
                                    {"activation_function": "relu"}], ids=["gpt2", "layer-scaled", "relu"])
def test_a_decoding_step_gives_the_forward_logits_on_a_left_padded_batch(tokenizer, prepare, config) -> None:  # noqa: F811
    model = prepare(gpt2_with(tokenizer, **config))
    contexts = [tokenizer.encode(text) for text in (CORPUS[0], " ".join(CORPUS[:3]), "ok")]
    width = max(map(len, contexts))
    ids = torch.tensor([[tokenizer.eos_token_id] * (width - len(c)) + c for c in contexts])
    mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts])
    step = decoding_step(model)
    with torch.inference_mode():
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        ours = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True).past_key_values
        theirs = copy.deepcopy(ours)
        last, positions = ids[:, -1:], mask.sum(-1, keepdim=True)
        for _ in range(3):  # a few steps: the cache each one leaves must serve the next
            mask = torch.cat([mask, torch.ones_like(last)], dim=1)
            logits = step(last, mask, positions, ours)
            expected = model(input_ids=last, attention_mask=mask, position_ids=positions, past_key_values=theirs,
                             use_cache=True).logits[:, -1, :]
            assert torch.allclose(logits, expected, atol=1e-4, rtol=1e-4)
            last, positions = expected.argmax(-1, keepdim=True), positions + 1


@pytest.mark.kafka
async def test_chat_int8_serves_the_quantised_model(serve: Serve) -> None:  # noqa: F811
    client, serving = await serve(chat_int8=True)
    model = serving.holders["chat"].current.model.model
    assert not any(isinstance(module, Conv1D) for module in model.modules())
    response = await client.post("/api/chat", json={"session_id": "s-int8", "message": ROUTINE})
    assert response.status == 200 and (await response.json())["backend"] == "local"
