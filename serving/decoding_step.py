"""One decoding step of the chat engine: a token per sequence in, the next token's logits out.

A GPT-2 step through transformers' forward runs over a thousand small tensor ops for 12 layers (views, mask
building, dtype conversions, cache bookkeeping) besides the weight read that is the step's real work; on a CPU,
at one sequence, they cost about a seventh of the step. For GPT-2-architecture models (DialoGPT's, the embedded
base's) this module runs the same arithmetic with only the ops it needs, calling the model's own modules
(packed, quantised or plain), so its logits are transformers' up to float rounding (tests/test_engine.py
compares them, and the engine's replies with generate()'s).
Any other model, or a GPT-2 configured in a way this step does not reproduce, goes through the model's forward.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

# The configurations the lean step reproduces exactly: self-attention only, the tanh-approximated GELU, and no
# eager-only reordering of the attention product.
_TANH_GELUS = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast"}

DecodingStep = Callable[[Any, Any, Any, Any], Any]  # (last ids [rows,1], mask, positions [rows,1], cache) -> logits


def decoding_step(model: Any) -> DecodingStep:
    """The step for model: lean for a plain GPT-2 (see the module doc), its own forward otherwise. The cache is
    a transformers DynamicCache, updated in place; the logits are those of each row's new position [rows, vocab]."""
    config = model.config
    lean = (getattr(config, "model_type", None) == "gpt2" and not getattr(config, "add_cross_attention", False)
            and not getattr(config, "reorder_and_upcast_attn", False)
            and getattr(config, "activation_function", None) in _TANH_GELUS)
    return _gpt2_step(model) if lean else _forward_step(model)


def _forward_step(model: Any) -> DecodingStep:
    def step(last: Any, mask: Any, positions: Any, cache: Any) -> Any:
        output = model(input_ids=last, attention_mask=mask, position_ids=positions, past_key_values=cache,
                       use_cache=True)
        return output.logits[:, -1, :]

    return step


def _gpt2_step(model: Any) -> DecodingStep:
    import torch
    import torch.nn.functional as F

    body = model.transformer

    def norm(layer: Any, x: Any) -> Any:
        return F.layer_norm(x, layer.normalized_shape, layer.weight, layer.bias, layer.eps)

    def step(last: Any, mask: Any, positions: Any, cache: Any) -> Any:
        rows = last.shape[0]
        x = body.wte(last) + body.wpe(positions)  # [rows, 1, embedding]
        # Each row sees its own tokens, never the left padding: an additive mask, made once for every layer.
        hidden = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill_(mask == 0, -math.inf)
        hidden = hidden[:, None, None, :]
        for block, layer in zip(body.h, cache.layers):
            attention = block.attn
            query, key, value = (attention.c_attn(norm(block.ln_1, x))
                                 .view(rows, 1, 3, attention.num_heads, attention.head_dim).permute(2, 0, 3, 1, 4))
            layer.keys = torch.cat([layer.keys, key], dim=2)
            layer.values = torch.cat([layer.values, value], dim=2)
            mixed = F.scaled_dot_product_attention(query, layer.keys, layer.values, attn_mask=hidden,
                                                   scale=attention.scaling)
            x = x + attention.c_proj(mixed.transpose(1, 2).reshape(rows, 1, -1))
            x = x + block.mlp.c_proj(F.gelu(block.mlp.c_fc(norm(block.ln_2, x)), approximate="tanh"))
        return model.lm_head(norm(body.ln_f, x))[:, -1, :]

    return step
