"""Chat generation speed under concurrent users: the batching engine against one request at a time; last line JSON.

The model is a GPT-2 124M (DialoGPT-small's architecture and vocabulary size, random weights) with the
50257-token tokenizer bench/swap.py builds offline. For each number of concurrent users (1, 4 and 8 by
default) every user sends --rounds requests one after another, each a fresh conversation from the same list of
messages, and the same run measures two ways of answering them, on the same prompts and the same
max_new_tokens, decoding greedily so both write the same tokens:

* ours: serving.engine.GenerationEngine through its asyncio front on the model as serving loads it (linear layers
  packed for oneDNN, serving/cpu_layers.py), as serving's POST /api/chat uses it (the lean GPT-2 step of
  serving/decoding_step.py, torch's thread count chosen step by step from measured step times);
* baseline: one request at a time through model.generate (serving.generation.generate_reply, what serving ran
  before the engine) on the plain model with torch's default threads, concurrent users queueing for it;
  baseline_1_thread is the same with one torch thread, to show what the engine adds beyond the thread count.

Per concurrency: tokens/s (reply tokens of all users / wall time), per-request latency p50/p99 and time to
first token p50 (each user's clock starts when it sends, so queueing counts). The machine's memory bandwidth
(a warm copy of 1 GiB, best of 5, read plus write traffic) gives the step bound: bytes of weights a decoding
step reads at the served dtype / bandwidth; step_ms is one user's decoding step on the engine (wall time; the
median over STEP_REQUESTS replies to a lone user, sent after the timed runs), and step_cpu_ms the process's CPU
time per token of those replies (prefill included), which a busy machine does not stretch. linear_floor_ms is one
row through the engine model's linear layers alone, with the thread count the engine chose for one user: the part
of step_ms that is the weight read, the rest being the step's other ops.

--int8 also runs the engine on a copy of the model with torch's dynamic int8 quantisation of every linear
layer (GPT-2's Conv1D layers turned into nn.Linear first, the lm_head included), and compares its mean token
loss with the fp32 model's on texts neither was built from (the held-out loss: random weights, so this bounds
the quantisation error, not the quality of a reply). Serving quantises so with chat_int8 (off by default).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/chat.py [--users 1,4,8] [--rounds 1] [--max-new-tokens 64] [--int8]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's packages, run from anywhere

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from bench.swap import MESSAGES, dialogpt_sized_tokenizer  # noqa: E402
from serving.chat_model import quantized_int8  # noqa: E402
from serving.cpu_layers import PackedLinear, prepacked  # noqa: E402
from serving.engine import GenerationEngine  # noqa: E402
from serving.generation import GenerationSettings, generate_reply  # noqa: E402

DEFAULT_THREADS = torch.get_num_threads()  # what the process starts with (the old code path's)
STEP_REQUESTS = 5  # lone replies whose median step is step_ms: one reply's step moves with the machine's noise
COPY_BYTES = 1 << 30  # the bandwidth probe: at least 1 GiB, far beyond any cache
HELD_OUT = ("We walked along the canal after lunch and talked about nothing much",  # for the int8 loss only
            "The appointment moved to Thursday so I rearranged the whole week",
            "Some mornings the kettle is the only thing that feels manageable")


@dataclass(frozen=True)
class Timing:
    latency: float  # request sent to reply complete
    ttft: float  # request sent to first token
    tokens: int  # reply tokens written


class FirstToken:
    """A streamer (transformers' put/end protocol) noting when the first reply token came and how many came."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.tokens = 0
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.first = self.first or time.perf_counter()
        self.tokens += value.numel()

    def end(self) -> None:
        pass


def memory_bandwidth() -> float:
    """Bytes per second moved by a warm 1 GiB tensor copy (read + write), best of 5."""
    source = torch.ones(COPY_BYTES // 4, dtype=torch.float32)
    target = torch.empty_like(source)
    target.copy_(source)  # warm: pages faulted in
    best = min(_timed(lambda: target.copy_(source)) for _ in range(5))
    return 2 * COPY_BYTES / best


def _timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of weights one decoding step reads: every parameter once (the tied lm_head is the embedding,
    read whole for the logits), but the position table, of which a step reads one row."""
    skip = {id(model.transformer.wpe.weight)}
    return sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in skip)


def linear_floor_ms(model: torch.nn.Module, threads: int) -> float:
    """One row through every packed linear layer of model and nothing else, on threads torch threads (median of 5
    passes): what the weight reads alone cost a step, the floor under step_ms."""
    layers = [module for module in model.modules() if isinstance(module, PackedLinear)]
    rows = {layer.in_features: torch.randn(1, layer.in_features) for layer in layers}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            passes = [_timed(lambda: [layer(rows[layer.in_features]) for layer in layers]) for _ in range(5)]
    finally:
        torch.set_num_threads(before)
    return 1000 * float(np.median(passes))


def int8_copy(model: GPT2LMHeadModel) -> torch.nn.Module:
    """A copy of the model as serving quantises it with chat_int8 (serving.chat_model.quantized_int8)."""
    return quantized_int8(copy.deepcopy(model))


def held_out_loss(model: torch.nn.Module, tokenizer) -> float:
    """Mean next-token loss over HELD_OUT."""
    losses = []
    with torch.inference_mode():
        for text in HELD_OUT:
            ids = torch.tensor([tokenizer.encode(text)])
            losses.append(float(model(input_ids=ids, labels=ids).loss))
    return float(np.mean(losses))


async def user(answer, prompts: list[str]) -> list[Timing]:
    """One user: its prompts one after another, each timed from the moment it is sent."""
    timings = []
    for prompt in prompts:
        streamer = FirstToken()
        sent = time.perf_counter()
        await answer([prompt], streamer)
        done = time.perf_counter()
        timings.append(Timing(done - sent, (streamer.first or done) - sent, streamer.tokens))
    return timings


async def measure(answer, users: int, rounds: int) -> dict:
    prompts = [[MESSAGES[(u + r) % len(MESSAGES)] for r in range(rounds)] for u in range(users)]
    started, cpu_started = time.perf_counter(), time.process_time()
    timings = [t for per_user in await asyncio.gather(*(user(answer, p) for p in prompts)) for t in per_user]
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    latencies = [t.latency for t in timings]
    return {"tokens": sum(t.tokens for t in timings), "tokens_per_s": sum(t.tokens for t in timings) / wall,
            "p50": float(np.percentile(latencies, 50)), "p99": float(np.percentile(latencies, 99)),
            "ttft": float(np.percentile([t.ttft for t in timings], 50)), "cpu_s": cpu, "timings": timings}


def build_model() -> tuple[GPT2LMHeadModel, object]:
    tokenizer = dialogpt_sized_tokenizer()
    eos = tokenizer.eos_token_id
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                        bos_token_id=eos, eos_token_id=eos)
    return GPT2LMHeadModel(config).eval(), tokenizer


async def run(users: list[int], rounds: int, max_new_tokens: int, int8: bool) -> dict:
    print("building a 124M model and a 50257-token tokenizer...", file=sys.stderr, flush=True)
    model, tokenizer = build_model()
    settings = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=False)
    engine = GenerationEngine(prepacked(copy.deepcopy(model)), tokenizer, settings, max_batch=max(users))
    one_at_a_time = asyncio.Lock()

    async def ours(history, streamer):
        return await engine.reply(history, streamer=streamer)

    def generate_with(threads: int, history, streamer):
        torch.set_num_threads(threads)  # this worker thread's own (the engine thread keeps its count)
        return generate_reply(model, tokenizer, history, settings=settings, streamer=streamer)

    async def baseline(history, streamer):
        async with one_at_a_time:
            return await asyncio.to_thread(generate_with, DEFAULT_THREADS, history, streamer)

    async def baseline_1_thread(history, streamer):
        async with one_at_a_time:
            return await asyncio.to_thread(generate_with, 1, history, streamer)

    answers = (("baseline", baseline), ("baseline_1_thread", baseline_1_thread), ("ours", ours))
    for _, answer in answers:  # warm-up: the first call of each pays for lazy initialisation
        await answer([MESSAGES[0]], FirstToken())
    results: dict[str, dict[int, dict]] = {name: {} for name, _ in answers}
    for count in users:
        for name, answer in answers:
            results[name][count] = await measure(answer, count, rounds)
            r = results[name][count]
            print(f"{name:17} users={count}: {r['tokens_per_s']:.1f} tokens/s, p50 {r['p50']:.2f}s, "
                  f"p99 {r['p99']:.2f}s, ttft {r['ttft']:.3f}s ({r['tokens']} tokens)", file=sys.stderr, flush=True)
    lone = await measure(ours, 1, STEP_REQUESTS)
    floor_ms = linear_floor_ms(engine.model, engine.thread_choice.best(1))
    engine.close()
    if int8:
        quantised = int8_copy(model)
        engine8 = GenerationEngine(quantised, tokenizer, settings, max_batch=max(users))

        async def ours8(history, streamer):
            return await engine8.reply(history, streamer=streamer)

        await ours8([MESSAGES[0]], FirstToken())
        results["int8"] = {}
        for count in users:
            results["int8"][count] = r = await measure(ours8, count, rounds)
            print(f"{'int8':17} users={count}: {r['tokens_per_s']:.1f} tokens/s, p50 {r['p50']:.2f}s, "
                  f"ttft {r['ttft']:.3f}s ({r['tokens']} tokens)", file=sys.stderr, flush=True)
        engine8.close()
        results["loss"] = {"fp32": held_out_loss(model, tokenizer), "int8": held_out_loss(quantised, tokenizer)}
    bandwidth = memory_bandwidth()
    step_bound_ms = weight_bytes(model) / bandwidth * 1000
    step_ms = 1000 * float(np.median([(t.latency - t.ttft) / (t.tokens - 1) for t in lone["timings"] if t.tokens > 1]))
    # CPU time, not wall time: on a shared machine a step waits for a core as well as for memory.
    step_cpu_ms = 1000 * lone["cpu_s"] / lone["tokens"]
    print(f"memory bandwidth {bandwidth / 1e9:.2f} GB/s (1 GiB copy, read + write, best of 5): a step reading "
          f"{weight_bytes(model) / 1e6:.0f} MB of fp32 weights is bounded by {step_bound_ms:.1f} ms; one user's step "
          f"on the engine {step_ms:.1f} ms ({step_ms / step_bound_ms:.2f}x), of which CPU time {step_cpu_ms:.1f} ms "
          f"({step_cpu_ms / step_bound_ms:.2f}x; the rest is time off the CPU); the linear layers alone take "
          f"{floor_ms:.1f} ms ({floor_ms / step_bound_ms:.2f}x)", file=sys.stderr, flush=True)
    return {"results": results, "bandwidth_gb_s": bandwidth / 1e9, "step_bound_ms": step_bound_ms,
            "step_ms": step_ms, "step_cpu_ms": step_cpu_ms, "linear_floor_ms": floor_ms,
            "engine_threads": {"among": list(engine.thread_choice.counts),
                               "chosen_by_users": {str(count): engine.thread_choice.best(count) for count in users}}}


def report(measured: dict, *, users: list[int], rounds: int, max_new_tokens: int) -> dict:
    ours, base = measured["results"]["ours"], measured["results"]["baseline"]

    def per_users(results: dict, key: str, digits: int = 3) -> dict[str, float]:
        return {str(count): round(results[count][key], digits) for count in users}

    summary = {
        "model": "gpt2-124m (DialoGPT-small architecture, random weights, 50257-token tokenizer)",
        "device": "cpu", "dtype": "float32", "users": users,
        "torch_threads": {"ours": measured["engine_threads"], "baseline": DEFAULT_THREADS}, "rounds": rounds,
        "max_new_tokens": max_new_tokens, "decoding": "greedy",
        "tokens": per_users(ours, "tokens", 0), "baseline_tokens": per_users(base, "tokens", 0),
        "tokens_per_s": per_users(ours, "tokens_per_s", 1), "baseline_tokens_per_s": per_users(base, "tokens_per_s", 1),
        "ratio": {str(c): round(ours[c]["tokens_per_s"] / base[c]["tokens_per_s"], 2) for c in users},
        "p50": per_users(ours, "p50"), "p99": per_users(ours, "p99"), "ttft": per_users(ours, "ttft"),
        "baseline_p50": per_users(base, "p50"), "baseline_p99": per_users(base, "p99"),
        "baseline_ttft": per_users(base, "ttft"),
        "baseline_1_thread_tokens_per_s": per_users(measured["results"]["baseline_1_thread"], "tokens_per_s", 1),
        "bandwidth_gb_s": round(measured["bandwidth_gb_s"], 2), "step_bound_ms": round(measured["step_bound_ms"], 1),
        "step_ms": round(measured["step_ms"], 1), "step_cpu_ms": round(measured["step_cpu_ms"], 1),
        "linear_floor_ms": round(measured["linear_floor_ms"], 1),
    }
    if "int8" in measured["results"]:
        int8, loss = measured["results"]["int8"], measured["results"]["loss"]
        summary["int8"] = {"tokens_per_s": per_users(int8, "tokens_per_s", 1), "p50": per_users(int8, "p50"),
                           "ttft": per_users(int8, "ttft"),
                           "ratio_vs_fp32_engine": {str(c): round(int8[c]["tokens_per_s"] / ours[c]["tokens_per_s"], 2)
                                                    for c in users},
                           "held_out_loss_fp32": round(loss["fp32"], 4), "held_out_loss_int8": round(loss["int8"], 4),
                           "loss_change": round(loss["int8"] / loss["fp32"] - 1, 4)}
    if 4 in users and 1 in users:
        summary["goals_met"] = {
            "tokens_per_s_4_ge_3x_baseline": ours[4]["tokens_per_s"] >= 3 * base[4]["tokens_per_s"],
            "p50_4_le_1_6x_p50_1": ours[4]["p50"] <= 1.6 * ours[1]["p50"],
            "step_le_1_5x_bound": measured["step_ms"] <= 1.5 * measured["step_bound_ms"],
            "ttft_4_le_0_25_reply": ours[4]["ttft"] <= 0.25 * ours[4]["p50"],
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="1,4,8", help="concurrent users, comma-separated (default 1,4,8)")
    parser.add_argument("--rounds", type=int, default=1, help="requests each user sends in turn (default 1)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="reply length (default 64)")
    parser.add_argument("--int8", action="store_true", help="also measure the engine on an int8-quantised copy")
    args = parser.parse_args()
    try:
        users = sorted({int(part) for part in args.users.split(",")})
    except ValueError:
        parser.error("--users takes whole numbers separated by commas, e.g. 1,4,8")
    if min(users) < 1 or args.rounds < 1 or args.max_new_tokens < 2:
        parser.error("users and rounds must be at least 1, max-new-tokens at least 2")
    measured = asyncio.run(run(users, args.rounds, args.max_new_tokens, args.int8))
    print(json.dumps(report(measured, users=users, rounds=args.rounds, max_new_tokens=args.max_new_tokens)))


if __name__ == "__main__":
    main()
