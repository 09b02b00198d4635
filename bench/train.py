"""Benchmark of the chat training loop (issue 7), one run on this machine; the last line is JSON.

Speed: a model of DialoGPT-small's size (the GPT-2 124M architecture, random weights, the same
initial weights for both) trained for one epoch on the same examples, with the same batch size,
learning rate and schedule, fp32: trainer.chat_training.train_chat against transformers.Trainer
at its best standard setting (train_sampling_strategy="group_by_length", the transformers 5 name,
with its padding collator DataCollatorForSeq2Seq). Both count the same real (non-padding) tokens;
neither checkpoints; both final models are scored by the same evaluation on held-out conversations.

Learning: the embedded base is first trained well on "earlier" conversations; then an incremental
run on "new" ones (new topics) with a replay share of the earlier, against a full retrain from the
base on earlier + new. incremental_gap = (incr - full) / full held-out loss on new conversations;
compute_ratio = tokens processed incr / full; forgetting = relative increase of the held-out loss on
earlier conversations from before to after the incremental run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/train.py [--speed-steps 16] [--help]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's packages, run from anywhere

import torch  # noqa: E402
from transformers import (  # noqa: E402
    DataCollatorForSeq2Seq,
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainingArguments,
)

from trainer.base_model import (  # noqa: E402
    EMBEDDED_LEARNING_RATE,
    build_embedded_base,
    load_causal_lm,
    load_tokenizer,
)
from trainer.chat_training import ChatHParams, Dialogue, build_examples, evaluate_loss, train_chat  # noqa: E402
from trainer.device import pick_device  # noqa: E402


TRAINER_DEFAULTS = ChatHParams()  # the incremental run measured is the trainer's default recipe


@dataclass(frozen=True, kw_only=True)
class BenchSettings:
    seed: int = 0  # conversations, initial weights, data order
    speed_batch_size: int = 8  # examples per step, both loops
    speed_steps: int = 16  # optimizer steps, both loops: one epoch over speed_steps * batch size examples
    speed_learning_rate: float = 3e-4  # peak LR, both loops (cosine schedule after warm-up)
    speed_warmup_steps: int = 0  # both loops; from random weights Adam needs none at this LR
    speed_eval_conversations: int = 12  # held out, scored by the same evaluation for both models
    earlier_conversations: int = 540  # training conversations on the earlier topics
    new_conversations: int = 60  # training conversations on the new topics: a tenth of all, as at a threshold
    eval_conversations: int = 40  # held out per group (earlier, new)
    learning_batch_size: int = TRAINER_DEFAULTS.batch_size  # all three runs
    learning_rate: float = EMBEDDED_LEARNING_RATE  # peak LR of all three runs (the incremental one re-warms to it)
    full_epochs: int = 6  # the earlier run and the full retrain (trained well: more epochs barely help)
    incremental_epochs: int = TRAINER_DEFAULTS.epochs  # over the new conversations, each epoch with fresh replay
    replay_share: float = TRAINER_DEFAULTS.replay_share  # of each incremental epoch's conversations


# Synthetic therapy conversations: slots the therapist has to copy from the context (feeling, duration,
# subject, a pseudonymized friend, a score), techniques that depend on the topic, and phrasings the
# therapist varies at random, so the loss has a floor as real conversations do. "New" topics bring
# subjects, symptoms and techniques the earlier conversations never had.
@dataclass(frozen=True)
class Topic:
    subjects: tuple[str, ...]
    symptoms: tuple[str, ...]
    techniques: tuple[tuple[str, str], ...]  # (the therapist's suggestion, how it is named when planning)


EARLIER_TOPICS = (
    Topic(
        ("not sleeping", "waking up at night", "my nightmares"),
        ("I lie awake until three in the morning.", "I wake up tired every single day.", "I dread going to bed."),
        (("Keeping the same bedtime every night can help your body settle.", "keep a regular bedtime"),
         ("Putting your phone away an hour before sleep gives your mind time to slow down.", "plan a wind down hour")),
    ),
    Topic(
        ("my job", "deadlines at work", "my manager"),
        ("I check emails late into the night.", "I feel sick on Sunday evenings.", "I cannot switch off after work."),
        (("Writing a short list of three priorities each morning can make the work feel smaller.", "write a priority list"),
         ("Agreeing a time to stop checking emails can protect your evenings.", "set an email cut off time")),
    ),
    Topic(
        ("my exams", "revision", "my final year at college"),
        ("I stare at my notes and nothing goes in.", "I keep thinking that I will fail.", "My mind goes blank in tests."),
        (("Short revision blocks of twenty five minutes, with a break after each, can help you focus.", "plan revision blocks"),
         ("Testing yourself with past papers builds confidence better than rereading notes.", "try one past paper")),
    ),
    Topic(
        ("arguments at home", "my parents", "my brother"),
        ("We shout at each other every evening.", "I stay in my room to avoid them.", "Every meal ends in a row."),
        (("Calm I statements, like I feel hurt when, can lower the heat of an argument.", "practise an I statement"),
         ("Taking a short pause before you answer can stop an argument from growing.", "try a pause before answering")),
    ),
    Topic(
        ("money worries", "my debts", "paying the rent"),
        ("I cannot open my bank letters.", "I lie awake adding up bills.", "I hide the post from my partner."),
        (("Writing every bill on one page can make the total feel less frightening.", "list your bills on one page"),
         ("Free debt advice services can help you plan repayments you can manage.", "call a debt advice service")),
    ),
    Topic(
        ("my health", "a pain in my side", "my test results"),
        ("I search my symptoms online for hours.", "I keep checking my body for lumps.", "I think every headache is serious."),
        (("Setting a short worry time each day can stop health fears from filling every hour.", "set a daily worry time"),
         ("Noticing the urge to check, and waiting ten minutes before acting on it, weakens the habit.", "wait ten minutes before checking")),
    ),
)
NEW_TOPICS = (
    Topic(
        ("losing my dad", "my grandmother's death", "the funeral"),
        ("I keep expecting a call that never comes.", "I cry whenever I see old photos.", "The house feels so quiet now."),
        (("A letter to the person you lost can give your feelings somewhere to go.", "write that letter"),
         ("Grief has no timetable, and setting aside a quiet time to remember can help.", "plan a time to remember")),
    ),
    Topic(
        ("living alone", "moving to a new city", "losing touch with friends"),
        ("Whole weekends pass without a conversation.", "I eat dinner alone every night.", "Nobody would notice if I vanished."),
        (("Joining one small group activity, like a walking club, can make new connections feel possible.", "choose a group to visit"),
         ("Sending one message to an old friend can be a gentle first step.", "send that first message")),
    ),
    Topic(
        ("panic attacks", "my racing heart", "feeling faint in shops"),
        ("My chest gets tight and I think I am dying.", "I leave the supermarket with my basket half full.", "I avoid buses now."),
        (("Breathing in for four and out for six tells your body that it is safe.", "practise the four six breathing"),
         ("Naming five things you can see brings your attention back to the room.", "try the five things exercise")),
    ),
    Topic(
        ("my break up", "my ex moving on", "the end of my marriage"),
        ("I check their photos every night.", "I cannot stop replaying our last argument.", "I still set two plates."),
        (("Muting their accounts for a while can give your heart a chance to heal.", "mute their accounts"),
         ("Writing down what you need from a future relationship can help you look forward.", "write that list of needs")),
    ),
    Topic(
        ("being a new parent", "my baby's crying", "looking after a newborn"),
        ("I have not slept properly in weeks.", "I feel like I am failing my baby.", "I cry when my partner leaves for work."),
        (("Sharing the night feeds, even one night a week, can give you a block of real sleep.", "share one night feed"),
         ("Many new parents feel this way, and your health visitor can check how you are coping.", "talk to your health visitor")),
    ),
    Topic(
        ("how I look", "my weight", "looking in the mirror"),
        ("I cover every mirror in the house.", "I skip meals after seeing photos.", "I cancel plans if I feel ugly."),
        (("Noticing the harsh words you use about your body, and writing kinder ones, can soften that voice.", "write kinder words"),
         ("Unfollowing accounts that make you compare your body can ease the pressure.", "unfollow those accounts")),
    ),
)
FEELINGS = ("anxious", "low", "exhausted", "overwhelmed", "tense", "hopeless", "irritable", "numb", "lost", "on edge")
DURATIONS = ("a few days", "two weeks", "a month", "since the spring", "most of this year", "since Christmas",
             "three months", "since the summer")
SCORES = ("three", "four", "five", "six", "seven", "eight", "nine")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")


def conversation(topic: Topic, rng: random.Random) -> Dialogue:
    feeling, duration, score = rng.choice(FEELINGS), rng.choice(DURATIONS), rng.choice(SCORES)
    subject, symptom = rng.choice(topic.subjects), rng.choice(topic.symptoms)
    suggestion, practice = rng.choice(topic.techniques)
    friend = f"[PERSON_{rng.getrandbits(16):04x}]"  # what the anonymizer leaves of a name
    opener = rng.choice(("Thank you for telling me.", "I am glad you reached out.", "That sounds really difficult.",
                         "I am sorry you are going through this.", "It took courage to say that."))
    reflection = rng.choice((f"Feeling {feeling} for {duration} is hard.", f"Being {feeling} for {duration} is a lot to carry.",
                             f"It makes sense to feel {feeling} after {duration} of this."))
    question = rng.choice((f"How does {subject} affect your days?", f"What is it like when {subject} is on your mind?",
                           f"When do you notice {subject} most?"))
    support = rng.choice((f"It is good that {friend} is looking out for you.", f"{friend} sounds like a caring friend.",
                          f"I am glad you have {friend} on your side."))
    plan = rng.choice((f"Shall we {practice} together this week?", f"Could you {practice} before we next meet?",
                       f"How would it feel to {practice} this week?"))
    turns: Dialogue = [
        ("patient", f"Hi. I have been feeling {feeling} for {duration} because of {subject}."),
        ("therapist", f"{opener} {reflection} {question}"),
        ("patient", f"{symptom} My friend {friend} says I should talk to someone."),
        ("therapist", f"{support} {suggestion}"),
        ("patient", f"On a scale of one to ten, I would say it is a {score} right now."),
        ("therapist", f"A {score} out of ten tells me how heavy this feels. {plan}"),
    ]
    if rng.random() < 0.3:  # an app-written reminder: context only, never a target
        turns.insert(4, ("assistant", f"Reminder: your next session is on {rng.choice(WEEKDAYS)}."))
    if rng.random() < 0.5:
        closing = rng.choice((f"Good. Tell me next time how it went to {practice}.", f"Great. We will talk about how you managed to {practice}."))
        turns += [("patient", "Yes, I will try that."), ("therapist", closing)]
    else:
        closing = rng.choice((f"It is okay to feel unsure. We can {practice} slowly.", f"That is fair. Even a small try to {practice} counts."))
        turns += [("patient", "I am not sure it will help."), ("therapist", closing)]
    return turns


def conversations(topics: tuple[Topic, ...], count: int, rng: random.Random) -> list[Dialogue]:
    return [conversation(rng.choice(topics), rng) for _ in range(count)]


def bench_speed(settings: BenchSettings, base_dir: Path, work: Path) -> dict:
    """Our loop and transformers.Trainer on the GPT-2 124M architecture, same examples, steps, LR, fp32."""
    tokenizer = load_tokenizer(base_dir)
    rng = random.Random(settings.seed)

    def examples_of(dialogues: list[Dialogue]) -> list[dict]:
        return build_examples(dialogues, tokenizer, max_len=256, target_roles=("therapist",))

    train_dialogues: list[Dialogue] = []
    train_examples: list[dict] = []
    while len(train_examples) < settings.speed_steps * settings.speed_batch_size:
        train_dialogues.append(conversation(rng.choice(EARLIER_TOPICS + NEW_TOPICS), rng))
        train_examples += examples_of(train_dialogues[-1:])
    eval_examples = examples_of(conversations(EARLIER_TOPICS + NEW_TOPICS, settings.speed_eval_conversations, rng))
    tokens = sum(len(example["input_ids"]) for example in train_examples)
    steps = math.ceil(len(train_examples) / settings.speed_batch_size)  # one epoch, both loops

    initial = work / "gpt2-124m"
    torch.manual_seed(settings.seed)
    eos = tokenizer.eos_token_id
    GPT2LMHeadModel(GPT2Config(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)).save_pretrained(initial)
    tokenizer.save_pretrained(initial)
    print(f"speed: GPT-2 124M, {len(train_examples)} examples ({len(train_dialogues)} conversations), "
          f"{tokens} real tokens, {steps} steps of {settings.speed_batch_size}, "
          f"{torch.get_num_threads()} threads", flush=True)

    hparams = ChatHParams(
        learning_rate=settings.speed_learning_rate,
        batch_size=settings.speed_batch_size,
        epochs=1,
        warmup_steps=settings.speed_warmup_steps,
        max_len=256,
        replay_share=0.0,
        eval_share=0.0,  # the held-out set is the bench's own, scored alike for both models
        seed=settings.seed,
        checkpoint_every_s=math.inf,  # the Trainer runs with save_strategy="no"
    )
    ours = train_chat(parent_dir=initial, out_dir=work / "ours", new=train_dialogues, replay_pool=[], hparams=hparams)
    assert ours["tokens"] == tokens, "both loops must see the same examples"
    ours_model, _ = load_causal_lm(work / "ours")
    eval_loss_ours = evaluate_loss(ours_model, eval_examples, pad_id=eos)
    del ours_model
    print(f"  ours: {ours['duration_s']:.1f} s, {ours['tokens_per_s']:.0f} tokens/s, eval loss {eval_loss_ours:.4f}",
          flush=True)

    hf_model, _ = load_causal_lm(initial)
    args = TrainingArguments(
        output_dir=str(work / "hf"),
        per_device_train_batch_size=settings.speed_batch_size,
        learning_rate=settings.speed_learning_rate,
        num_train_epochs=1,
        lr_scheduler_type="cosine",
        warmup_steps=min(settings.speed_warmup_steps, steps // 10),  # train_chat's cap, for the same schedule
        max_grad_norm=1.0,
        train_sampling_strategy="group_by_length",
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=10_000,
        seed=settings.seed,
    )
    collator = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)
    trainer = Trainer(model=hf_model, args=args, train_dataset=train_examples, data_collator=collator,
                      processing_class=tokenizer)
    hf_runtime = trainer.train().metrics["train_runtime"]
    eval_loss_hf = evaluate_loss(hf_model, eval_examples, pad_id=eos)
    print(f"  transformers.Trainer: {hf_runtime:.1f} s, {tokens / hf_runtime:.0f} tokens/s, "
          f"eval loss {eval_loss_hf:.4f}", flush=True)
    return {
        "ratio": ours["tokens_per_s"] / (tokens / hf_runtime),
        "ours_tokens_per_s": ours["tokens_per_s"],
        "hf_tokens_per_s": tokens / hf_runtime,
        "eval_loss_ours": eval_loss_ours,
        "eval_loss_hf": eval_loss_hf,
    }


def bench_learning(settings: BenchSettings, base_dir: Path, work: Path) -> dict:
    """Incremental run (new + replay, from the earlier model) against a full retrain from the base."""
    tokenizer = load_tokenizer(base_dir)
    rng = random.Random(settings.seed + 1)
    earlier = conversations(EARLIER_TOPICS, settings.earlier_conversations, rng)
    new = conversations(NEW_TOPICS, settings.new_conversations, rng)
    earlier_eval = build_examples(conversations(EARLIER_TOPICS, settings.eval_conversations, rng), tokenizer,
                                  max_len=256, target_roles=("therapist",))
    new_eval = build_examples(conversations(NEW_TOPICS, settings.eval_conversations, rng), tokenizer,
                              max_len=256, target_roles=("therapist",))

    def run(name: str, parent: Path, dialogues: list[Dialogue], replay_pool: list[Dialogue], **recipe) -> tuple[Path, dict]:
        hparams = ChatHParams(learning_rate=settings.learning_rate, batch_size=settings.learning_batch_size,
                              eval_share=0.0, seed=settings.seed, **recipe)
        metrics = train_chat(parent_dir=parent, out_dir=work / name, new=dialogues, replay_pool=replay_pool,
                             hparams=hparams)
        print(f"  {name}: {metrics['steps']} steps, {metrics['tokens']} tokens, {metrics['duration_s']:.1f} s", flush=True)
        return work / name, metrics

    def losses_of(model_dir: Path) -> tuple[float, float]:
        """Held-out loss of a model on (earlier, new) conversations."""
        model, _ = load_causal_lm(model_dir)
        return tuple(evaluate_loss(model, examples, pad_id=tokenizer.pad_token_id)
                     for examples in (earlier_eval, new_eval))

    print(f"learning: embedded base, {len(earlier)} earlier + {len(new)} new conversations "
          f"(held out: {settings.eval_conversations} each)", flush=True)
    earlier_dir, _ = run("earlier", base_dir, earlier, [], epochs=settings.full_epochs, replay_share=0.0)
    incr_dir, incr = run("incremental", earlier_dir, new, earlier, epochs=settings.incremental_epochs,
                         replay_share=settings.replay_share)
    full_dir, full = run("full", base_dir, earlier + new, [], epochs=settings.full_epochs, replay_share=0.0)

    (earlier_before, new_before), (earlier_after, new_incr), (earlier_full, new_full) = (
        losses_of(earlier_dir), losses_of(incr_dir), losses_of(full_dir))
    print(f"  held-out loss on new: incremental {new_incr:.4f}, full retrain {new_full:.4f}, "
          f"earlier model {new_before:.4f}", flush=True)
    print(f"  held-out loss on earlier: before {earlier_before:.4f}, after the incremental run {earlier_after:.4f}, "
          f"full retrain {earlier_full:.4f}", flush=True)
    return {
        "incremental_gap": (new_incr - new_full) / new_full,
        "compute_ratio": incr["tokens"] / full["tokens"],
        "forgetting": (earlier_after - earlier_before) / earlier_before,
    }


def parse_settings() -> BenchSettings:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for setting in fields(BenchSettings):
        parser.add_argument(f"--{setting.name.replace('_', '-')}", type=type(setting.default), default=setting.default)
    return BenchSettings(**vars(parser.parse_args()))


def main() -> None:
    settings = parse_settings()
    pick_device()  # threads set once: both loops run with the same
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        base_dir = build_embedded_base(work / "base", seed=settings.seed)
        result = {**bench_speed(settings, base_dir, work), **bench_learning(settings, base_dir, work)}
    print(f"speed ratio {result['ratio']:.2f} (goal >= 1.3), eval loss ours/HF "
          f"{result['eval_loss_ours'] / result['eval_loss_hf'] - 1:+.2%} (goal within 2%); incremental gap "
          f"{result['incremental_gap']:+.3f} (goal <= 0.02) at {result['compute_ratio']:.0%} of the full retrain's "
          f"tokens (goal <= 30%), forgetting {result['forgetting']:+.3f} (goal <= 0.05)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
