"""The embedded base model and the chat training loop, on CPU with the tiny embedded GPT-2."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from trainer.base_model import EOS_TOKEN, build_embedded_base, load_causal_lm
from trainer.chat_training import (
    IGNORE_INDEX,
    ChatHParams,
    Dialogue,
    accumulate_gradients,
    build_examples,
    collate,
    evaluate_loss,
    label_loss_fn,
    train_chat,
)

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    # A model this small gains nothing from threads, and the machine running the suite is shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_embedded_base(tmp_path_factory.mktemp("base") / "v0", seed=0)


def dialogue(n: int) -> Dialogue:
    return [
        ("patient", f"I have felt anxious for {n} days and I cannot sleep."),
        ("therapist", f"Feeling anxious for {n} days is hard. What keeps you awake?"),
        ("patient", "My thoughts race about work."),
        ("assistant", "Reminder: your next session is on Monday."),
        ("therapist", "Writing your worries down before bed can quiet a racing mind."),
    ]


DIALOGUES = [dialogue(n) for n in range(2, 10)]
FAST = ChatHParams(learning_rate=3e-3, batch_size=4, epochs=4, warmup_steps=0, replay_share=0.0, eval_share=0.25)


def test_embedded_base_loads_with_from_pretrained_and_is_deterministic(base_dir: Path, tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    assert tokenizer.eos_token == tokenizer.pad_token == EOS_TOKEN
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.decode(tokenizer.encode("I feel anxious today.")) == "I feel anxious today."
    again = build_embedded_base(tmp_path / "again", seed=0)
    digest = [hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest() for folder in (base_dir, again)]
    assert digest[0] == digest[1]


def test_examples_learn_therapist_turns_from_masked_context(base_dir: Path) -> None:
    _, tokenizer = load_causal_lm(base_dir, device=CPU)
    eos = tokenizer.eos_token_id
    examples = build_examples([dialogue(3)], tokenizer, max_len=256, target_roles=("therapist",))
    assert len(examples) == 2  # the assistant turn is context only
    for example, turn in zip(examples, (1, 4)):
        target = [label for label in example["labels"] if label != IGNORE_INDEX]
        assert tokenizer.decode(target[:-1]) == dialogue(3)[turn][1] and target[-1] == eos
        context = example["input_ids"][: len(example["input_ids"]) - len(target)]
        assert example["labels"][: len(context)] == [IGNORE_INDEX] * len(context)
        assert tokenizer.decode(context).split(EOS_TOKEN)[:-1] == [text for _, text in dialogue(3)[:turn]]

    whole = examples[1]["input_ids"]
    for max_len in (len(whole) + 10, len(whole), len(whole) - 5, 24):  # the context is cut from the left to fit
        cut = build_examples([dialogue(3)], tokenizer, max_len=max_len, target_roles=("therapist",))[1]
        assert cut["input_ids"] == whole[max(0, len(whole) - max_len) :]
    opening = build_examples([[("therapist", "Welcome.")]], tokenizer, max_len=256, target_roles=("therapist",))[0]
    assert opening["input_ids"][0] == eos and opening["labels"][0] == IGNORE_INDEX


def test_train_chat_lowers_loss_and_writes_safetensors(base_dir: Path, tmp_path: Path) -> None:
    seen: list[dict] = []
    metrics = train_chat(parent_dir=base_dir, out_dir=tmp_path / "v1", new=DIALOGUES, replay_pool=[], hparams=FAST,
                         device=CPU, progress=seen.append)
    assert metrics["conversations"]["new_eval"] == 2 and metrics["conversations"]["new_train"] == 6
    assert metrics["eval_loss"] < metrics["eval_loss_parent"]
    assert metrics["eval_perplexity"] == pytest.approx(torch.tensor(metrics["eval_loss"]).exp().item())
    assert metrics["steps"] == len(seen) == seen[-1]["steps"] and seen[-1]["loss"] < seen[0]["loss"]
    assert metrics["tokens"] > metrics["label_tokens"] > 0 and metrics["training_targets"] == 12
    assert (tmp_path / "v1" / "model.safetensors").exists() and not (tmp_path / "v1" / "checkpoint").exists()
    trained, tokenizer = load_causal_lm(tmp_path / "v1", device=CPU)
    parent, _ = load_causal_lm(base_dir, device=CPU)
    examples = build_examples(DIALOGUES, tokenizer, max_len=256, target_roles=("therapist",))
    pad = tokenizer.pad_token_id
    assert evaluate_loss(trained, examples, pad_id=pad) < evaluate_loss(parent, examples, pad_id=pad) - 0.5


def test_tiny_sets_still_hold_out_a_conversation_or_say_there_is_none(base_dir: Path, tmp_path: Path) -> None:
    metrics = train_chat(parent_dir=base_dir, out_dir=tmp_path / "two", new=DIALOGUES[:2], replay_pool=DIALOGUES[2:],
                         hparams=ChatHParams(epochs=1, replay_share=0.5), device=CPU)
    assert metrics["conversations"] == {"new_train": 1, "new_eval": 1, "replay_train": 1, "replay_eval": 1}
    assert metrics["eval_loss"] is not None and metrics["eval_loss_replay"] is not None
    single = train_chat(parent_dir=base_dir, out_dir=tmp_path / "one", new=DIALOGUES[:1], replay_pool=[],
                        hparams=ChatHParams(epochs=1), device=CPU)
    assert single["eval_loss"] is None and single["conversations"]["new_train"] == 1


def test_resume_after_a_crash_ends_where_an_uninterrupted_run_does(base_dir: Path, tmp_path: Path) -> None:
    hparams = replace(FAST, checkpoint_every_s=0.0)
    uninterrupted = train_chat(parent_dir=base_dir, out_dir=tmp_path / "straight", new=DIALOGUES, replay_pool=[],
                               hparams=hparams, device=CPU)

    def crash_at_step_3(report: dict) -> None:
        if report["step"] == 3:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train_chat(parent_dir=base_dir, out_dir=tmp_path / "crashed", new=DIALOGUES, replay_pool=[], hparams=hparams,
                   device=CPU, progress=crash_at_step_3)
    assert (tmp_path / "crashed" / "checkpoint" / "step-0000003" / "model.safetensors").exists()
    resumed = train_chat(parent_dir=base_dir, out_dir=tmp_path / "crashed", new=DIALOGUES, replay_pool=[],
                         hparams=hparams, device=CPU)
    assert resumed["resumed_from_step"] == 3 and uninterrupted["resumed_from_step"] == 0
    assert resumed["train_loss"] == pytest.approx(uninterrupted["train_loss"], rel=1e-5)
    assert resumed["tokens"] == uninterrupted["tokens"]
    straight = load_file(tmp_path / "straight" / "model.safetensors")
    for name, tensor in load_file(tmp_path / "crashed" / "model.safetensors").items():
        torch.testing.assert_close(tensor, straight[name], rtol=1e-5, atol=1e-6)


def test_a_checkpoint_of_another_run_is_not_resumed(base_dir: Path, tmp_path: Path) -> None:
    hparams = replace(FAST, checkpoint_every_s=0.0, epochs=1)

    def crash(report: dict) -> None:
        raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError):
        train_chat(parent_dir=base_dir, out_dir=tmp_path / "v1", new=DIALOGUES, replay_pool=[], hparams=hparams,
                   device=CPU, progress=crash)
    assert (tmp_path / "v1" / "checkpoint" / "step-0000001" / "model.safetensors").exists()  # there is one to refuse
    other = replace(hparams, seed=1)
    metrics = train_chat(parent_dir=base_dir, out_dir=tmp_path / "v1", new=DIALOGUES, replay_pool=[], hparams=other,
                         device=CPU)
    assert metrics["resumed_from_step"] == 0


def test_accumulated_loss_is_normalized_by_the_label_tokens_of_the_whole_step(base_dir: Path) -> None:
    model, tokenizer = load_causal_lm(base_dir, device=CPU)
    model.eval()  # no dropout: the two ways must see the same network
    short, long = build_examples([[("patient", "Hi."), ("therapist", "Hello."),
                                   ("patient", "I feel low."), ("therapist", dialogue(3)[4][1] * 3)]],
                                 tokenizer, max_len=256, target_roles=("therapist",))
    loss_fn = label_loss_fn(model)

    def gradients(micro_batches: list[list[dict]]) -> tuple[list[torch.Tensor], float, int]:
        model.zero_grad()
        batches = [collate(batch, pad_id=tokenizer.pad_token_id, device=CPU) for batch in micro_batches]
        loss_sum, label_tokens = accumulate_gradients(loss_fn, batches)
        return [p.grad.clone() for p in model.parameters()], loss_sum, label_tokens

    one_batch, loss_one, labels_one = gradients([[short, long]])
    accumulated, loss_acc, labels_acc = gradients([[short], [long]])
    assert labels_one == labels_acc and loss_acc == pytest.approx(loss_one, rel=1e-5)
    for whole, parts in zip(one_batch, accumulated):
        torch.testing.assert_close(parts, whole, rtol=1e-4, atol=1e-7)

    # The per-micro-batch mean that #34191 fixed weights the short example's few tokens as much as the long one's.
    model.zero_grad()
    for batch in ([short], [long]):
        loss_sum, label_tokens = loss_fn(*collate(batch, pad_id=tokenizer.pad_token_id, device=CPU))
        (loss_sum / label_tokens / 2).backward()
    per_batch_mean = [p.grad for p in model.parameters()]
    assert not all(torch.allclose(naive, whole, atol=1e-6) for naive, whole in zip(per_batch_mean, one_batch))
