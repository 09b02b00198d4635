"""The embedded base model, built offline, and the one loader for every causal language model.

With no base model configured, learnstream serves a tiny GPT-2 whose byte-level BPE tokenizer is
trained on the therapy-style dialogues bundled beside this file. It is saved the way the Hugging
Face hub stores models, so the same `from_pretrained` code loads it, a registry version, or
microsoft/DialoGPT-small where a user has it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from trainer.device import pick_device

EOS_TOKEN = "<|endoftext|>"  # GPT-2's, so DialoGPT-style examples look the same on every base
CORPUS_PATH = Path(__file__).with_name("base_corpus.jsonl")
# Tokenizer and model size: a vocabulary the small corpus can fill (it stops near 930 tokens)
# and a model that trains in seconds on a CPU yet has the two layers copying from context needs.
TOKENIZER_VOCAB_SIZE = 2048
N_LAYER = 2
N_HEAD = 4
N_EMBD = 128
N_POSITIONS = 256
# The peak learning rate the embedded base trains well at, from scratch and incrementally (bench/train.py);
# far above what a pretrained model such as DialoGPT takes.
EMBEDDED_LEARNING_RATE = 3e-3


def base_corpus() -> list[list[tuple[str, str]]]:
    """The bundled dialogues: one JSON object per line, {"turns": [[role, text], ...]}."""
    with CORPUS_PATH.open(encoding="utf-8") as lines:
        return [[(role, text) for role, text in json.loads(line)["turns"]] for line in lines]


def train_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A byte-level BPE (GPT-2's scheme: any text encodes, no unknown tokens) with eos as pad."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=TOKENIZER_VOCAB_SIZE,
            min_frequency=2,
            special_tokens=[EOS_TOKEN],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=N_POSITIONS,
    )


def build_embedded_base(out_dir: Path, *, seed: int = 0) -> Path:
    """Write the embedded base (safetensors weights, config, tokenizer) into out_dir; the same seed gives the same files."""
    tokenizer = train_tokenizer([text for dialogue in base_corpus() for _, text in dialogue])
    eos_id = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=N_POSITIONS,
        n_embd=N_EMBD,
        n_layer=N_LAYER,
        n_head=N_HEAD,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """A causal LM's tokenizer from a folder or hub id, with a pad token."""
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.pad_token is None:
        # GPT-2 and DialoGPT ship without one; batches are right-padded and the pads masked out of the loss.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    name_or_path: str | Path, *, device: torch.device | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer from a folder or hub id (HF_HUB_OFFLINE is honoured), in fp32 on `device`."""
    tokenizer = load_tokenizer(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch.float32)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device or pick_device()), tokenizer
