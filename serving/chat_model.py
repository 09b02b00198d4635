"""The local chat model as serving holds it: a registry version loaded with from_pretrained, warmed up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from learnstream.registry import Version
from serving.generation import GenerationSettings, generate_reply


@dataclass(frozen=True)
class ChatModel:
    model: Any
    tokenizer: Any
    settings: GenerationSettings

    @classmethod
    def load(cls, version: Version, *, settings: GenerationSettings) -> "ChatModel":
        """The same from_pretrained call loads the embedded base, a trained version or DialoGPT-small."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(version.path)
        model = AutoModelForCausalLM.from_pretrained(version.path, dtype=torch.float32)
        model.eval()
        chat = cls(model, tokenizer, settings)
        chat.reply(["hello"])  # warm-up: the first request must not pay for lazy initialisation
        return chat

    def reply(self, history: list[str]) -> tuple[str, float]:
        """(reply, confidence) for a conversation whose last turn is the user's message. Thread-safe."""
        return generate_reply(self.model, self.tokenizer, history, settings=self.settings)
