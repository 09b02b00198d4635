"""Hot swaps under continuous chat load, with a model of DialoGPT-small's size; the last line is JSON.

The real swap path: a registry holding a few versions of a GPT-2 124M model (DialoGPT-small's architecture and
vocabulary size, random weights) is served by serving.app.Serving over HTTP on a local port. Clients post
/api/chat without pause, each on its own connection, while model.updated events are applied with
ModelUpdates.apply, exactly what the replica's listener does for each record it reads (so no broker is needed:
verify the manifest, load and warm up off the event loop, swap). Fresh sessions on every request keep the work per
request the same from start to end.

Reported: failed requests (anything but a 200 from the local model); chat p50/p99 in steady state (a steady phase
before the swaps and one after, so background load drifting on a shared machine affects both sides alike, and
only requests overlapping no swap at all); p99 of the requests that overlap the loading part of a swap (verify,
load, warm up), against the steady p99 (ratio); process RSS after the last swap against after the first (ratio),
each read once every request started before that swap has finished.

The tokenizer is a byte-level BPE of 50257 tokens like GPT-2's, built offline: the merges learnt from the
embedded base corpus (trainer/base_model.py), then synthetic merges of existing tokens up to 50257. It encodes and
decodes every id the random model writes; its merges differ from GPT-2's, which matters little for speed. Every
version carries the same tokenizer files, as fine-tuned versions of one base do.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/swap.py [--swaps 20] [--clients 3] [--steady-seconds 20] [--help]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's packages, run from anywhere

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast  # noqa: E402

from learnstream.config import Settings  # noqa: E402
from learnstream.registry import Registry, model_updated_event  # noqa: E402
from ops.broker import free_port  # noqa: E402
from serving.app import Serving, run_http  # noqa: E402
from serving.generation import GenerationSettings  # noqa: E402
from trainer.base_model import EOS_TOKEN, base_corpus, train_tokenizer  # noqa: E402

VOCAB_SIZE = 50257  # GPT-2's and DialoGPT-small's: 256 bytes + 50000 merges + <|endoftext|>
MESSAGES = ("I've been feeling tense all week", "Work is busy and I'm not sleeping well",
            "I had a better day today", "My sister is visiting at the weekend")


@dataclass(frozen=True, kw_only=True)
class BenchSettings:
    swaps: int = 20  # model.updated events applied while chatting; memory is compared after the first and last
    versions: int = 3  # registry versions of the model, swapped in turn (each ~500 MB on disk)
    clients: int = 3  # concurrent chat loops, each waiting for its answer before asking again
    steady_seconds: float = 20.0  # chatting without swaps, before the swaps and again after them (each)
    max_new_tokens: int = 32  # reply length; random weights never stop early, so every reply is this long


def dialogpt_sized_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE with GPT-2's vocabulary size, built offline (see the module docstring)."""
    learnt = train_tokenizer([text for dialogue in base_corpus() for _, text in dialogue])
    spec = json.loads(learnt.backend_tokenizer.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    merges: list[list[str]] = spec["model"]["merges"]
    tokens = sorted(vocab, key=vocab.get)[1:]  # without <|endoftext|>
    for left in tokens:
        for right in tokens:
            if len(vocab) == VOCAB_SIZE:
                break
            if left + right not in vocab:
                vocab[left + right] = len(vocab)
                merges.append([left, right])
    backend = Tokenizer.from_str(json.dumps(spec))
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN,
                                   unk_token=EOS_TOKEN, pad_token=EOS_TOKEN, model_max_length=1024)


def build_registry(root: Path, *, versions: int) -> Registry:
    """Versions 0..versions-1 of a GPT-2 124M (DialoGPT-small's config), each with its own random weights."""
    tokenizer = dialogpt_sized_tokenizer()
    eos = tokenizer.eos_token_id
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    registry = Registry(root)
    with registry.writer_lock():
        for number in range(versions):
            torch.manual_seed(number)
            with registry.staging("chat") as staged:
                GPT2LMHeadModel(config).save_pretrained(staged)
                tokenizer.save_pretrained(staged)
                registry.commit("chat", staged, {"base_model": "random-gpt2-124m", "parent_version": None,
                                                 "decision": "promoted", "reason": "bench"})
        registry.set_served("chat", 0)
    return registry


@dataclass
class Request:
    started: float
    ended: float
    ok: bool
    version: int | None


@dataclass
class Chatter:
    """One client: posts /api/chat without pause and records every request."""

    url: str
    name: str
    requests: list[Request] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        async with aiohttp.ClientSession() as http:
            while not self.stopping.is_set():
                number = len(self.requests)
                body = {"session_id": f"{self.name}-{number}", "message": MESSAGES[number % len(MESSAGES)]}
                started = time.perf_counter()
                try:
                    async with http.post(self.url, json=body) as response:
                        answer = await response.json(content_type=None)
                        ok = response.status == 200 and answer.get("backend") == "local"
                        version = answer.get("model_version")
                except (aiohttp.ClientError, ValueError):  # ValueError: an answer that is not JSON
                    ok, version = False, None
                self.requests.append(Request(started, time.perf_counter(), ok, version))

    async def finished_one_started_after(self, moment: float) -> None:
        while not any(r.started >= moment for r in self.requests):
            await asyncio.sleep(0.05)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def percentile(latencies: list[float], q: float) -> float:
    if not latencies:
        raise SystemExit("no request finished in a measured window: nothing to compare (a longer run?)")
    return float(np.percentile(latencies, q))


async def chat_through_swaps(serving: Serving, chatters: list[Chatter], bench: BenchSettings) -> dict:
    """Steady phase, the swaps, steady phase; returns the swap windows, their durations and RSS readings."""
    registry, holder = serving.registry, serving.holders["chat"]
    windows: list[tuple[float, float]] = []  # whole swaps: verify, load, warm up, swap, release the old model
    loading: list[tuple[float, float]] = []  # their first part, competing for the CPU: until the new one answers
    rss: dict[int, float] = {}
    failed_swaps = 0
    await asyncio.sleep(bench.steady_seconds)
    for swap in range(1, bench.swaps + 1):
        number = (holder.version + 1) % bench.versions
        event = model_updated_event(registry.get("chat", number), decision="promoted", reason="bench")
        started = time.perf_counter()
        applying = asyncio.create_task(serving.updates.apply(orjson.dumps(event)))
        while holder.version != number and not applying.done():
            await asyncio.sleep(0.01)
        loading.append((started, time.perf_counter()))
        failed_swaps += not await applying
        await holder.released()
        windows.append((started, time.perf_counter()))
        print(f"swap {swap}: version {number} answering after {loading[-1][1] - started:.1f}s, the old one "
              f"released after {windows[-1][1] - started:.1f}s", file=sys.stderr, flush=True)
        if swap in (1, bench.swaps):
            # Requests that started before the swap may still hold the old model; once they end it must be gone.
            await asyncio.gather(*(c.finished_one_started_after(windows[-1][1]) for c in chatters))
            rss[swap] = rss_mib()
    steady_again = time.perf_counter()
    await asyncio.sleep(bench.steady_seconds)
    return {"windows": windows, "loading": loading, "rss": rss, "failed_swaps": failed_swaps,
            "steady_again": steady_again}


def overlaps(request: Request, windows: list[tuple[float, float]]) -> bool:
    return any(request.started < end and request.ended > start for start, end in windows)


def summarize(requests: list[Request], run: dict, *, bench: BenchSettings) -> dict:
    """Steady: requests of the steady phases that overlap no swap at all. During swaps: requests that overlap
    the loading part of one (what competes with them; releasing the old model is one ctypes call)."""
    windows, loading = run["windows"], run["loading"]
    steady = [r.ended - r.started for r in requests
              if (r.ended <= windows[0][0] or r.started >= run["steady_again"]) and not overlaps(r, windows)]
    during = [r.ended - r.started for r in requests if overlaps(r, loading)]
    swap_in = [end - start for start, end in loading]
    rss_first, rss_last = run["rss"][1], run["rss"][bench.swaps]
    return {
        "model": "gpt2-124m (DialoGPT-small architecture, random weights, 50257-token tokenizer)",
        "device": "cpu", "torch_threads": torch.get_num_threads(), **vars(bench),
        "requests": len(requests), "failed_requests": sum(not r.ok for r in requests),
        "failed_swaps": run["failed_swaps"],
        "versions_answered": sorted({r.version for r in requests if r.version is not None}),
        "steady_requests": len(steady), "chat_p50_s": round(percentile(steady, 50), 3),
        "chat_p99_s": round(percentile(steady, 99), 3),
        "requests_during_swaps": len(during), "swap_p99_s": round(percentile(during, 99), 3),
        "p99_ratio_swaps_vs_steady": round(percentile(during, 99) / percentile(steady, 99), 3),
        "swap_in_seconds_p50": round(percentile(swap_in, 50), 2), "swap_in_seconds_max": round(max(swap_in), 2),
        "swap_with_release_seconds_p50": round(percentile([end - start for start, end in windows], 50), 2),
        "rss_mib_after_1_swap": round(rss_first, 1), f"rss_mib_after_{bench.swaps}_swaps": round(rss_last, 1),
        "rss_ratio": round(rss_last / rss_first, 3),
    }


async def serve_and_measure(serving: Serving, bench: BenchSettings) -> dict:
    await serving.holders["chat"].load_served()
    port = free_port()
    runner = await run_http(serving.app, port=port, host="127.0.0.1")
    chatters = [Chatter(f"http://127.0.0.1:{port}/api/chat", f"client{n}") for n in range(bench.clients)]
    tasks = [asyncio.create_task(c.run()) for c in chatters]
    try:
        await asyncio.gather(*(c.finished_one_started_after(0.0) for c in chatters))  # past the first requests
        run = await chat_through_swaps(serving, chatters, bench)
    finally:
        for chatter in chatters:
            chatter.stopping.set()
        await asyncio.gather(*tasks)
        await runner.cleanup()
    first_answers = [min(r.ended for r in c.requests) for c in chatters]
    requests = [r for c in chatters for r in c.requests if r.started >= max(first_answers)]
    return summarize(requests, run, bench=bench)


async def run_bench(bench: BenchSettings) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-swap-") as data_dir:
        print(f"building {bench.versions} versions of a 124M model...", file=sys.stderr, flush=True)
        build_registry(Path(data_dir) / "registry", versions=bench.versions)
        # The events producer and model.updated consumer are built but never started: swaps are applied as the
        # listener applies them, and crisis messages (which would publish a flag) are not part of this bench.
        settings = Settings(data_dir=Path(data_dir), bootstrap_servers="unused:9092", dev=True, use_local_ai=True)
        serving = Serving(settings, generation=GenerationSettings(max_new_tokens=bench.max_new_tokens))
        try:
            await serving.store.start()  # serving checks each version's lineage against the erasure ledger
            return await serve_and_measure(serving, bench)
        finally:
            await serving.stop()


def main() -> None:
    defaults = BenchSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in vars(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    bench = BenchSettings(**vars(parser.parse_args()))
    if bench.swaps < 1 or bench.versions < 2:
        parser.error("at least 1 swap and 2 versions")
    result = asyncio.run(run_bench(bench))
    goals = {"zero_failed": result["failed_requests"] == 0 and result["failed_swaps"] == 0,
             "p99_ratio_le_1_5": result["p99_ratio_swaps_vs_steady"] <= 1.5,
             "rss_ratio_le_1_1": result["rss_ratio"] <= 1.1}
    print(json.dumps({**result, "goals_met": goals}))


if __name__ == "__main__":
    main()
