"""The local chat model as serving holds it: a registry version loaded with from_pretrained, warmed up."""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any

from learnstream.registry import Version
from serving.engine import GenerationEngine
from serving.generation import GenerationSettings

WARM_UP_TOKENS = 2
MODEL_FILES = ("config.json", "generation_config.json")  # besides the weights: what the tokenizer never reads
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")


@dataclass(frozen=True)
class ChatModel:
    model: Any
    tokenizer: Any
    settings: GenerationSettings
    engine: GenerationEngine = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        engine = GenerationEngine(self.model, self.tokenizer, self.settings)
        object.__setattr__(self, "engine", engine)
        # The engine thread holds the model, not this object: once the last request on a swapped-out model ends,
        # this object goes (the holder watches for that), and its engine thread ends with it.
        weakref.finalize(self, engine.close)

    @classmethod
    def load(cls, version: Version, *, settings: GenerationSettings, tokenizer: Any = None,
             int8: bool = False) -> "ChatModel":
        """The same from_pretrained call loads the embedded base, a trained version or DialoGPT-small.
        tokenizer: one already loaded from identical files (see ChatModelLoader); None loads the version's.
        int8: quantise the linear layers (quantized_int8), on a CPU only; otherwise a CPU model's linear layers
        are packed for oneDNN (serving/cpu_layers.py)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from serving.cpu_layers import prepacked

        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(version.path)
        model = AutoModelForCausalLM.from_pretrained(version.path, dtype=torch.float32)
        model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu")).eval()
        if int8 and model.device.type == "cpu":
            model = quantized_int8(model)
        else:  # fp32 on a CPU: weights packed once, so a batched decoding step reads them without repacking
            model = prepacked(model)
        # GPT-2 configs reuse eos as pad, and every context ends with an eos (the turn separator): with a pad id
        # transformers would take those eos for padding ("We strongly recommend passing in an attention_mask").
        # The engine always passes its attention mask.
        model.config.pad_token_id = None
        chat = cls(model, tokenizer, settings)
        # Warm-up: the first request must not pay for lazy initialisation. Two tokens run both the prompt pass and
        # a cached decoding step; a full reply would only take CPU from the requests served meanwhile.
        chat.engine.warm_up(WARM_UP_TOKENS)
        return chat

    async def reply(self, history: list[str], *, streamer: Any = None) -> tuple[str, float]:
        """(reply, confidence) for a conversation whose last turn is the user's message, batched with the other
        requests on this model (serving.engine). streamer: given each token as it is generated."""
        return await self.engine.reply(history, streamer=streamer)


def quantized_int8(model: Any) -> Any:
    """model with every linear layer dynamically quantised to int8 (in place). GPT-2's Conv1D layers (weights
    stored [in, out]) become nn.Linear first, so they are quantised too; the tied lm_head gets its own int8
    copy while the embedding stays fp32. fbgemm's int8 kernels use prepacked weights, as the fp32 model's
    packed layers do (serving/cpu_layers.py; bench/chat.py --int8 compares the two)."""
    import torch

    from serving.cpu_layers import conv1d_as_linear

    conv1d_as_linear(model)
    with warnings.catch_warnings():  # torch.ao's eager quantisation warns that it is deprecated for torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def tokenizer_fingerprint(version: Version) -> tuple[tuple[str, str], ...] | None:
    """The names and hashes of every file of the version but its weights and model config; None if it lists none."""
    files = version.manifest.get("files") or {}
    return tuple(sorted((name, digest) for name, digest in files.items()
                        if name not in MODEL_FILES and not name.endswith(WEIGHT_SUFFIXES))) or None


class ChatModelLoader:
    """The chat holder's load(version): ChatModel.load, reusing the last tokenizer when its files are unchanged.

    Reading a 50257-token tokenizer holds the GIL for ~0.5 s, stalling every request meanwhile (bench/swap.py),
    and fine-tuned versions keep their parent's tokenizer, so most swaps need not read it again. Called from one
    thread at a time (the holder's loader).
    """

    def __init__(self, settings: GenerationSettings, *, int8: bool = False) -> None:
        self._settings = settings
        self._int8 = int8
        self._fingerprint: tuple[tuple[str, str], ...] | None = None
        self._tokenizer: Any = None

    def __call__(self, version: Version) -> ChatModel:
        fingerprint = tokenizer_fingerprint(version)
        reusable = self._tokenizer if fingerprint is not None and fingerprint == self._fingerprint else None
        chat = ChatModel.load(version, settings=self._settings, tokenizer=reusable, int8=self._int8)
        self._fingerprint, self._tokenizer = fingerprint, chat.tokenizer
        return chat
