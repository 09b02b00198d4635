"""Fine-tuning a chat model on therapy dialogues, DialoGPT style, in a loop you can read top to bottom.

Examples: the turns of a conversation are joined by the eos token; for every turn of a target role
(therapist by default; assistant turns were written by a model and are context only) the model sees
the preceding turns, cut from the left to fit max_len, and learns the turn and its eos. The context
has label -100.

A run starts from the parent model (the served version) and trains on the new dialogues plus a
replay share of older ones, with the learning rate warmed up again: replay with re-warming is what
lets an incremental run match a full retrain without forgetting. Whole conversations are held out
for evaluation, so no turn of an evaluated conversation was trained on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_cosine_schedule_with_warmup

from trainer.base_model import load_causal_lm
from trainer.device import pick_device

log = logging.getLogger(__name__)

Turn = tuple[str, str]  # (role, text); roles: "patient" | "therapist" | "assistant"
Dialogue = list[Turn]  # one conversation, in order
Example = dict[str, list[int]]  # {"input_ids": [...], "labels": [...]}, labels -100 on the context
LossFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, int]]
IGNORE_INDEX = -100  # the label torch's cross-entropy (and transformers) skips
CHECKPOINT_DIR = "checkpoint"


# The defaults are the incremental recipe bench/train.py measures (no forgetting, as good as a full retrain
# at under 30% of its compute), except the learning rate, which depends on the model.
@dataclass(frozen=True, kw_only=True)
class ChatHParams:
    learning_rate: float = 1e-4  # peak AdamW LR after warm-up, then cosine decay to 0; suits pretrained models
    # (DialoGPT); the embedded base trains at base_model.EMBEDDED_LEARNING_RATE
    batch_size: int = 8  # examples per forward pass
    grad_accum: int = 1  # forward passes per optimizer step (examples per step = batch_size * grad_accum)
    epochs: int = 5  # passes over the new conversations, each with its own replay sample
    warmup_steps: int = 20  # linear LR warm-up, redone every run; capped at a tenth of the run so short runs reach the peak
    max_grad_norm: float = 1.0  # gradient clipping: one odd batch of a small run must not undo the parent
    max_len: int = 256  # tokens per example (context cut from the left); at most the model's positions
    replay_share: float = 0.7  # fraction of each epoch's conversations drawn from the replay pool, in [0, 1)
    eval_share: float = 0.1  # conversations held out (of the new ones, and of the replayed); 0 = none
    seed: int = 0  # hold-out split, replay sample, data order and dropout
    target_roles: tuple[str, ...] = ("therapist",)  # roles whose turns are learned; others are context
    checkpoint_every_s: float = 300.0  # seconds between resumable checkpoints (0 = after every step)

    def __post_init__(self) -> None:
        if not 0 <= self.replay_share < 1:
            raise ValueError(f"replay_share must be in [0, 1), got {self.replay_share}")
        if not 0 <= self.eval_share < 1:
            raise ValueError(f"eval_share must be in [0, 1), got {self.eval_share}")
        if min(self.batch_size, self.grad_accum, self.epochs) < 1 or self.max_len < 2:
            raise ValueError("batch_size, grad_accum and epochs must be at least 1, max_len at least 2")


def build_examples(
    dialogues: Sequence[Dialogue], tokenizer: PreTrainedTokenizerBase, *, max_len: int, target_roles: Sequence[str]
) -> list[Example]:
    """One example per target-role turn: its context (labels -100) then the turn and eos (labels = ids)."""
    eos = tokenizer.eos_token_id
    examples = []
    for dialogue in dialogues:
        context: list[int] = []
        for role, text in dialogue:
            turn = tokenizer.encode(text, add_special_tokens=False) + [eos]
            if role in target_roles:
                target = turn[: max_len - 1]  # a turn longer than max_len keeps its start and loses its eos
                # An opening turn gets eos as its context: it is learned from "conversation start".
                kept = context[max(0, len(context) + len(target) - max_len) :] if context else [eos]
                examples.append({"input_ids": kept + target, "labels": [IGNORE_INDEX] * len(kept) + target})
            context.extend(turn)
    return examples


def held_out_count(n_conversations: int, eval_share: float) -> int:
    """Conversations to hold out: at least one when there are two or more and eval_share > 0, never all.
    A single conversation is all trained on, and its run reports no eval loss."""
    if eval_share <= 0 or n_conversations < 2:
        return 0
    return min(n_conversations - 1, max(1, round(eval_share * n_conversations)))


def split_by_conversation(
    dialogues: Sequence[Dialogue], *, eval_share: float, seed: int
) -> tuple[list[Dialogue], list[Dialogue]]:
    """(train, held out), whole conversations on either side."""
    order = random.Random(seed).sample(range(len(dialogues)), len(dialogues))
    n_eval = held_out_count(len(dialogues), eval_share)
    return [dialogues[i] for i in order[n_eval:]], [dialogues[i] for i in order[:n_eval]]


def sample_replay(
    pool: Sequence[Dialogue], *, n_new_train: int, n_new_eval: int, hp: ChatHParams
) -> tuple[list[Dialogue], list[list[int]], list[Dialogue]]:
    """(replay conversations to train on, each epoch's indices into them, replay conversations held out).

    Each epoch's mix is `replay_share` older conversations, fresh ones every epoch while the pool lasts:
    the run rehearses a broad sample of what the parent learned instead of memorizing a few conversations.
    As many older conversations as new ones are held out, to measure forgetting (the pool may be huge).
    """
    wanted = round(n_new_train * hp.replay_share / (1 - hp.replay_share))
    n_eval = min(n_new_eval, len(pool) - 1) if wanted > 0 and pool else 0
    order = random.Random(hp.seed).sample(range(len(pool)), min(len(pool), n_eval + wanted * hp.epochs))
    held_out, trained = order[:n_eval], order[n_eval:]
    per_epoch = min(wanted, len(trained))
    epochs = [[(epoch * per_epoch + j) % len(trained) for j in range(per_epoch)] for epoch in range(hp.epochs)]
    return [pool[i] for i in trained], epochs, [pool[i] for i in held_out]


def replay_draw(pool_size: int, n_new: int, hp: ChatHParams) -> set[int]:
    """The indices of a pool of `pool_size` older conversations that prepare_data reads (replayed or held out)
    beside `n_new` new ones: a run loads only those."""
    n_eval = held_out_count(n_new, hp.eval_share)
    trained, _, held_out = sample_replay(range(pool_size), n_new_train=n_new - n_eval, n_new_eval=n_eval, hp=hp)
    return {*trained, *held_out}


def plan_steps(epochs: Sequence[Sequence[int]], lengths: Sequence[int], hp: ChatHParams) -> list[list[list[int]]]:
    """The data order: steps -> micro-batches -> example indices, from each epoch's examples.

    Length bucketing: each epoch sorts its examples by length (ties broken at random) and cuts batches
    of neighbours, so a batch pads to almost nothing; the batches are then shuffled.
    """
    rng = random.Random(hp.seed)
    steps: list[list[list[int]]] = []
    for members in epochs:
        by_length = sorted(members, key=lambda i: (lengths[i], rng.random()))
        batches = [by_length[i : i + hp.batch_size] for i in range(0, len(by_length), hp.batch_size)]
        rng.shuffle(batches)
        steps.extend(batches[i : i + hp.grad_accum] for i in range(0, len(batches), hp.grad_accum))
    return steps


@dataclass(frozen=True)
class TrainingData:
    train: list[Example]  # new examples first, then the replayed ones
    epochs: list[list[int]]  # each epoch's indices into train: every new example and that epoch's replay
    eval_new: list[Example]  # of the held-out new conversations
    eval_replay: list[Example]  # of the held-out older conversations
    conversations: dict[str, int]  # counts: new_train, new_eval, replay_train, replay_eval


def prepare_data(
    new: Sequence[Dialogue], replay_pool: Sequence[Dialogue], tokenizer: PreTrainedTokenizerBase, hp: ChatHParams
) -> TrainingData:
    new_train, new_eval = split_by_conversation(new, eval_share=hp.eval_share, seed=hp.seed)
    replay_train, replay_epochs, replay_eval = sample_replay(
        replay_pool, n_new_train=len(new_train), n_new_eval=len(new_eval), hp=hp
    )

    def to_examples(dialogues: Sequence[Dialogue]) -> list[Example]:
        return build_examples(dialogues, tokenizer, max_len=hp.max_len, target_roles=hp.target_roles)

    per_conversation = [to_examples([dialogue]) for dialogue in new_train + replay_train]
    starts = [0]
    for examples in per_conversation:
        starts.append(starts[-1] + len(examples))

    def example_ids(conversations: Iterable[int]) -> list[int]:
        return [i for c in conversations for i in range(starts[c], starts[c + 1])]

    new_ids = example_ids(range(len(new_train)))
    train = [example for examples in per_conversation for example in examples]
    if not train:
        raise ValueError(f"no training examples: no turn of the roles {hp.target_roles} in the training conversations")
    return TrainingData(
        train=train,
        epochs=[new_ids + example_ids(len(new_train) + r for r in replayed) for replayed in replay_epochs],
        eval_new=to_examples(new_eval),
        eval_replay=to_examples(replay_eval),
        conversations={
            "new_train": len(new_train),
            "new_eval": len(new_eval),
            "replay_train": len(replay_train),
            "replay_eval": len(replay_eval),
        },
    )


def collate(examples: Sequence[Example], *, pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, labels). No padding mask is needed: under causal attention a real token never
    sees the pads after it and positions stay 0..n-1, so the model keeps its mask-free (fastest) attention."""
    width = max(len(example["input_ids"]) for example in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        input_ids[row, : len(example["input_ids"])] = torch.tensor(example["input_ids"])
        labels[row, : len(example["labels"])] = torch.tensor(example["labels"])
    return input_ids.to(device), labels.to(device)


def label_loss_fn(model: PreTrainedModel) -> LossFn:
    """(input_ids, labels) -> (next-token cross-entropy summed over label tokens, their count).

    The LM head runs only at positions that predict a label. Context and padding, most of a dialogue
    example, skip the vocabulary projection and its softmax (for GPT-2 124M a third of the FLOPs per
    token). A probe checks that the model's logits are plainly head(backbone); models that scale or
    soft-cap them get the full forward instead.
    """
    backbone, head = model.base_model, model.get_output_embeddings()

    # All ones (see collate): pads sit after every real token, so nothing needs masking; an explicit mask
    # tells transformers so (pad = eos here, and it warns when it cannot tell) and keeps its causal fast path.
    def head_where_labelled(input_ids: torch.Tensor, predicts: torch.Tensor) -> torch.Tensor:
        hidden = backbone(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False)
        return head(hidden.last_hidden_state[predicts])

    def full_forward(input_ids: torch.Tensor, predicts: torch.Tensor) -> torch.Tensor:
        return model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False).logits[predicts]

    logits_at = full_forward
    if head is not None and _same_logits(model, head_where_labelled, full_forward):
        logits_at = head_where_labelled

    def loss(input_ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        targets = labels[:, 1:]
        predicts = targets != IGNORE_INDEX  # positions whose next token is a label
        logits = logits_at(input_ids[:, :-1], predicts)  # the last position predicts nothing
        return F.cross_entropy(logits.float(), targets[predicts], reduction="sum"), int(predicts.sum())

    return loss


def _same_logits(
    model: PreTrainedModel,
    first: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    second: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> bool:
    device = next(model.parameters()).device
    probe = (torch.arange(8, device=device) % model.config.vocab_size).unsqueeze(0)
    everywhere = torch.ones_like(probe, dtype=torch.bool)
    was_training = model.training
    model.eval()  # no dropout: the two forwards must be comparable
    with torch.no_grad():
        same = torch.allclose(first(probe, everywhere), second(probe, everywhere), atol=1e-4)
    model.train(was_training)
    return same


def accumulate_gradients(loss_fn: LossFn, micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, int]:
    """Backpropagate one optimizer step's micro-batches; return (summed loss, label tokens) of the step.

    Each micro-batch's summed loss is divided by the label tokens of the whole step, not averaged per
    micro-batch, so accumulation gives the gradient of one big batch (transformers #34191).
    """
    step_labels = sum(int((labels[:, 1:] != IGNORE_INDEX).sum()) for _, labels in micro_batches)
    step_loss = 0.0
    for input_ids, labels in micro_batches:
        loss_sum, _ = loss_fn(input_ids, labels)
        (loss_sum / step_labels).backward()
        step_loss += loss_sum.item()
    return step_loss, step_labels


@torch.no_grad()
def evaluate_loss(model: PreTrainedModel, examples: Sequence[Example], *, pad_id: int, batch_size: int = 16) -> float | None:
    """Mean cross-entropy per label token over `examples` (None when there are none)."""
    if not examples:
        return None
    loss_fn = label_loss_fn(model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    by_length = sorted(examples, key=lambda example: len(example["input_ids"]))
    loss_sum, label_tokens = 0.0, 0
    for start in range(0, len(by_length), batch_size):
        batch_loss, batch_labels = loss_fn(*collate(by_length[start : start + batch_size], pad_id=pad_id, device=device))
        loss_sum, label_tokens = loss_sum + batch_loss.item(), label_tokens + batch_labels
    model.train(was_training)
    return loss_sum / label_tokens


def train_chat(
    *,
    parent_dir: Path,
    out_dir: Path,
    new: list[Dialogue],
    replay_pool: list[Dialogue],
    hparams: ChatHParams,
    device: torch.device | None = None,
    progress: Callable[[dict], None] | None = None,
) -> dict:
    """Fine-tune the model in parent_dir on `new` plus replay; write model and tokenizer into out_dir; return metrics.

    Calling it again with the same arguments after a crash resumes from out_dir/checkpoint.
    """
    hp, out_dir = hparams, Path(out_dir)
    device = device or pick_device()
    model, tokenizer = load_causal_lm(parent_dir, device=device)
    if hp.max_len > model.config.max_position_embeddings:
        raise ValueError(f"max_len {hp.max_len} exceeds the model's {model.config.max_position_embeddings} positions")

    data = prepare_data(new, replay_pool, tokenizer, hp)
    train, pad_id = data.train, tokenizer.pad_token_id
    lengths = [len(example["input_ids"]) for example in train]

    # The run: the data order, the optimizer and its schedule, fresh or from a checkpoint of this run.
    plan = plan_steps(data.epochs, lengths, hp)
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp.learning_rate, fused=True)
    scheduler = get_cosine_schedule_with_warmup(optimizer, min(hp.warmup_steps, len(plan) // 10), len(plan))
    run_id = _run_fingerprint(parent_dir, hp, train)
    checkpoint_root = out_dir / CHECKPOINT_DIR
    state = _restore(checkpoint_root, run_id, model, optimizer, scheduler)
    if state is None:
        state = {
            "run_id": run_id,
            "plan": plan,
            "step": 0,
            "loss_sum": 0.0,
            "label_tokens": 0,
            "tokens": 0,
            "duration_s": 0.0,
            "eval_loss_parent": evaluate_loss(model, data.eval_new, pad_id=pad_id),
            "eval_loss_replay_parent": evaluate_loss(model, data.eval_replay, pad_id=pad_id),
        }
        torch.manual_seed(hp.seed)
    plan, resumed_from = state["plan"], state["step"]
    examples_per_step = hp.batch_size * hp.grad_accum
    log.info("training on %d examples of %s conversations", len(train), data.conversations)
    tokens_per_step = sum(lengths) / len(lengths) * examples_per_step
    log.info("%d steps of %d examples, ~%.0f tokens per step, %s", len(plan), examples_per_step, tokens_per_step,
             f"resuming at step {resumed_from}" if resumed_from else "starting from the parent")

    loss_fn = label_loss_fn(model)
    model.train()
    session_start = last_checkpoint = time.perf_counter()
    for step in range(resumed_from, len(plan)):
        micro_batches = [collate([train[i] for i in ids], pad_id=pad_id, device=device) for ids in plan[step]]
        step_loss, step_labels = accumulate_gradients(loss_fn, micro_batches)
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        state["step"] = step + 1
        state["loss_sum"] += step_loss
        state["label_tokens"] += step_labels
        state["tokens"] += sum(lengths[i] for ids in plan[step] for i in ids)
        now = time.perf_counter()
        if state["step"] < len(plan) and now - last_checkpoint >= hp.checkpoint_every_s:
            _save_checkpoint(checkpoint_root, state, now - session_start, model, optimizer, scheduler)
            last_checkpoint = time.perf_counter()
        if progress is not None:
            lr = scheduler.get_last_lr()[0]
            progress({"step": state["step"], "steps": len(plan), "loss": step_loss / step_labels, "lr": lr,
                      "tokens": state["tokens"]})
    duration_s = state["duration_s"] + time.perf_counter() - session_start

    eval_loss = evaluate_loss(model, data.eval_new, pad_id=pad_id)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    shutil.rmtree(checkpoint_root, ignore_errors=True)
    return {
        "train_loss": state["loss_sum"] / state["label_tokens"],
        "eval_loss": eval_loss,
        "eval_perplexity": math.exp(eval_loss) if eval_loss is not None else None,
        "eval_loss_parent": state["eval_loss_parent"],
        "eval_loss_replay": evaluate_loss(model, data.eval_replay, pad_id=pad_id),
        "eval_loss_replay_parent": state["eval_loss_replay_parent"],
        "tokens": state["tokens"],
        "label_tokens": state["label_tokens"],
        "steps": len(plan),
        # Target turns trained on, new and replayed; not the manifest's "samples" (the stored samples the run read).
        "training_targets": len(train),
        "conversations": data.conversations,
        "resumed_from_step": resumed_from,
        "duration_s": duration_s,
        "tokens_per_s": state["tokens"] / duration_s if duration_s > 0 else None,
        "hparams": asdict(hp),
        "device": str(device),
    }


def _run_fingerprint(parent_dir: Path, hp: ChatHParams, train: list[Example]) -> str:
    """Identifies a run: a checkpoint is resumed only by the run that wrote it."""
    digest = hashlib.sha256(json.dumps([str(Path(parent_dir).resolve()), asdict(hp)]).encode())
    for example in train:
        digest.update(json.dumps(example["input_ids"]).encode())
    return digest.hexdigest()


def _save_checkpoint(
    root: Path,
    state: dict,
    session_s: float,
    model: PreTrainedModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """One folder per step; its state.json, written last and atomically, marks it complete."""
    folder = root / f"step-{state['step']:07d}"
    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, str(folder / "model.safetensors"))
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    training_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng}
    torch.save(training_state, folder / "optimizer.pt")
    partial = folder / "state.json.partial"
    partial.write_text(json.dumps({**state, "duration_s": state["duration_s"] + session_s}))
    os.replace(partial, folder / "state.json")
    for older in root.glob("step-*"):
        if older != folder:
            shutil.rmtree(older)


def _restore(
    root: Path,
    run_id: str,
    model: PreTrainedModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict | None:
    """The saved state of this run's latest complete checkpoint, with model, optimizer, scheduler and RNG
    restored; None (and any stale checkpoint removed) when there is none for this run."""
    complete = sorted(folder for folder in root.glob("step-*") if (folder / "state.json").exists())
    state = json.loads((complete[-1] / "state.json").read_text()) if complete else None
    if state is None or state["run_id"] != run_id:
        if root.exists():
            log.warning("discarding an incomplete checkpoint or one of another run in %s", root)
            shutil.rmtree(root)
        return None
    load_model(model, str(complete[-1] / "model.safetensors"), device=str(next(model.parameters()).device))
    saved = torch.load(complete[-1] / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"]["cpu"])
    if "cuda" in saved["rng"]:
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
    return state
