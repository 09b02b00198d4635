"""Reply generation with a tiny random GPT-2, and the bounded, expiring session history."""

import math

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from serving.generation import (
    GenerationSettings,
    HistorySettings,
    SessionHistory,
    encode_history,
    generate_reply,
)

EOS = "<|endoftext|>"
CORPUS = [
    "hello, how are you feeling today?",
    "i feel a bit low and tired",
    "that sounds hard. what has been on your mind?",
    "work has been busy and i am not sleeping well",
    "it makes sense that you feel worn out",
]
GREEDY = GenerationSettings(do_sample=False, max_new_tokens=8)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS)


def tiny_gpt2(tokenizer: PreTrainedTokenizerFast, *, n_positions: int = 128) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=n_positions, n_embd=32, n_layer=1, n_head=2,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return GPT2LMHeadModel(config).eval()


@pytest.fixture
def talkative_model(tokenizer: PreTrainedTokenizerFast) -> GPT2LMHeadModel:
    """A random model that may not end its reply at once (eos is barred from the first new token)."""
    model = tiny_gpt2(tokenizer)
    model.generation_config.begin_suppress_tokens = [tokenizer.eos_token_id]
    return model


def test_reply_is_text_with_confidence_in_unit_interval(talkative_model, tokenizer) -> None:
    reply, confidence = generate_reply(talkative_model, tokenizer, ["hello, how are you?"], settings=GREEDY)
    assert reply and reply != GREEDY.fallback_reply
    assert 0.0 < confidence <= 1.0


def test_sampling_settings_are_accepted(talkative_model, tokenizer) -> None:
    settings = GenerationSettings(max_new_tokens=6, temperature=0.7, top_p=0.8, top_k=20)
    reply, confidence = generate_reply(talkative_model, tokenizer, CORPUS[:2], settings=settings)
    assert reply and 0.0 <= confidence <= 1.0


def test_confidence_is_geometric_mean_of_raw_token_probabilities(talkative_model, tokenizer) -> None:
    history = ["i feel a bit low"]
    _, confidence = generate_reply(talkative_model, tokenizer, history, settings=GREEDY)
    # The same greedy decoding by hand (a decoded reply need not re-encode to the same byte-level tokens).
    context = encode_history(tokenizer, history, max_context_tokens=512)
    input_ids = torch.tensor([context])
    with torch.inference_mode():
        sequence = talkative_model.generate(
            input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
            max_new_tokens=GREEDY.max_new_tokens, repetition_penalty=GREEDY.repetition_penalty,
            pad_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        )[0].tolist()
        reply_ids = sequence[len(context):]
        if tokenizer.eos_token_id in reply_ids:
            reply_ids = reply_ids[: reply_ids.index(tokenizer.eos_token_id)]
        logits = talkative_model(torch.tensor([context + reply_ids])).logits[0]
    log_probs = torch.log_softmax(logits[len(context) - 1 : -1], dim=-1)
    expected = math.exp(log_probs[range(len(reply_ids)), reply_ids].mean().item())
    assert confidence == pytest.approx(expected, rel=1e-3)


def test_model_that_only_ends_gets_fallback_reply(tokenizer) -> None:
    model = tiny_gpt2(tokenizer)
    model.generation_config.suppress_tokens = [t for t in range(len(tokenizer)) if t != tokenizer.eos_token_id]
    reply, confidence = generate_reply(model, tokenizer, ["hello"], settings=GREEDY)
    assert (reply, confidence) == (GREEDY.fallback_reply, 0.0)


def test_history_is_truncated_from_the_left(tokenizer) -> None:
    history = [f"turn {n}: work has been busy and i am not sleeping well" for n in range(20)]
    ids = encode_history(tokenizer, history, max_context_tokens=60)
    assert len(ids) <= 60 and ids[-1] == tokenizer.eos_token_id
    text = tokenizer.decode(ids)
    assert text.endswith(history[-1] + EOS) and history[0] not in text


def test_newest_turn_longer_than_budget_keeps_its_end(tokenizer) -> None:
    ids = encode_history(tokenizer, ["word " * 100 + "finally"], max_context_tokens=10)
    assert len(ids) == 10 and tokenizer.decode(ids).endswith("finally" + EOS)


def test_context_is_clamped_to_model_positions(tokenizer) -> None:
    model = tiny_gpt2(tokenizer, n_positions=40)
    history = ["work has been busy and i am not sleeping well"] * 30
    settings = GenerationSettings(do_sample=False, max_new_tokens=8, max_context_tokens=10_000)
    reply, _ = generate_reply(model, tokenizer, history, settings=settings)
    assert reply


def test_empty_history_is_rejected(talkative_model, tokenizer) -> None:
    with pytest.raises(ValueError):
        generate_reply(talkative_model, tokenizer, [], settings=GREEDY)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_history_keeps_last_turns_in_order() -> None:
    history = SessionHistory(settings=HistorySettings(max_turns=4))
    for n in range(3):
        history.append("s1", f"user {n}", f"reply {n}")
    assert history.get("s1") == ["user 1", "reply 1", "user 2", "reply 2"]
    assert history.get("other") == []


def test_history_returns_a_copy() -> None:
    history = SessionHistory(settings=HistorySettings())
    history.append("s1", "hi", "hello")
    history.get("s1").append("tampered")
    assert history.get("s1") == ["hi", "hello"]


def test_history_expires_after_idle_ttl() -> None:
    clock = FakeClock()
    history = SessionHistory(settings=HistorySettings(ttl_seconds=60), clock=clock)
    history.append("s1", "hi", "hello")
    clock.now += 59
    assert history.get("s1") == ["hi", "hello"]
    history.append("s1", "still there?", "yes")
    clock.now += 59  # idle time counts from the last turn
    assert len(history.get("s1")) == 4
    clock.now += 61
    assert history.get("s1") == []
    history.append("s1", "back", "welcome back")
    assert history.get("s1") == ["back", "welcome back"]


def test_expired_sessions_are_dropped_without_being_read() -> None:
    clock = FakeClock()
    history = SessionHistory(settings=HistorySettings(ttl_seconds=10), clock=clock)
    for n in range(50):
        history.append(f"s{n}", "hi", "hello")
    clock.now += 11
    history.append("fresh", "hi", "hello")
    assert len(history) == 1


def test_history_drops_least_recently_active_sessions() -> None:
    history = SessionHistory(settings=HistorySettings(max_sessions=3))
    for session in ("a", "b", "c"):
        history.append(session, "hi", "hello")
    history.append("a", "again", "hello again")  # "a" is now the most recent
    history.append("d", "hi", "hello")
    assert len(history) == 3
    assert history.get("b") == [] and history.get("a") and history.get("d")


def test_forget_removes_a_session() -> None:
    history = SessionHistory(settings=HistorySettings())
    history.append("s1", "hi", "hello")
    history.forget("s1")
    assert history.get("s1") == [] and len(history) == 0


def test_embedded_base_model_answers_before_any_training(tmp_path) -> None:
    from trainer.base_model import build_embedded_base, load_causal_lm

    model, base_tokenizer = load_causal_lm(build_embedded_base(tmp_path / "base"), device=torch.device("cpu"))
    model.eval()
    reply, confidence = generate_reply(
        model, base_tokenizer, ["hello", "hi, how are you?", "i feel low today"],
        settings=GenerationSettings(max_new_tokens=16),
    )
    assert reply.strip() and 0.0 <= confidence <= 1.0
