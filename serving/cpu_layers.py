"""The local chat model's linear layers prepared for CPU decoding: weights packed once for oneDNN's matmul.

A decoding step multiplies a few rows (one per sequence in the batch) by every weight matrix. With a single row
torch runs a matrix-vector product at the speed of memory; with 2 to 8 rows it calls MKL's sgemm, which first
copies the whole weight into its blocked layout, at every call. On this machine's CPU (AMD EPYC, AVX2) that made
a step of 4 rows cost ~2.4x a step of one (the lm_head, 50257 x 768, ~3x), where reading the weights once
should cost about the same for both. Reordering each weight once, at load, into oneDNN's blocked layout and
calling oneDNN's linear with it (what torch.compile's CPU freezing pass does) leaves each step mostly the read:
a 4-row step then costs ~1.3-1.7x a one-row step, with the same greedy replies.

The packed weights are opaque oneDNN tensors, so a prepacked model serves and is never saved or trained. The
tied lm_head of GPT-2 gets its own packed copy of the embedding (+154 MB for a 50257-token vocabulary): the
embedding lookup still needs the plain table.
"""

from __future__ import annotations

from typing import Any

import torch

PACKED_FOR_ROWS = 8  # oneDNN picks the blocked layout for this many rows; any number of rows still works


class PackedLinear(torch.nn.Module):
    """y = x W^T + b with W reordered once into oneDNN's layout (torch's private mkldnn ops, as inductor uses)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        # Plain attributes, not parameters: nothing trains, moves or saves these.
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), PACKED_FOR_ROWS)
        self.bias = None if bias is None else bias.detach().contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        y = torch.ops.mkldnn._linear_pointwise(rows, self.packed, self.bias, "none", [], "")
        return y.reshape(*x.shape[:-1], self.out_features)


def conv1d_as_linear(model: Any) -> Any:
    """GPT-2's Conv1D layers (weights stored [in, out]) as nn.Linear, in place: the form quantisation and
    packing take."""
    from transformers.pytorch_utils import Conv1D

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Conv1D):
                linear = torch.nn.Linear(child.weight.shape[0], child.weight.shape[1])
                linear.weight.data, linear.bias.data = child.weight.data.t().contiguous(), child.bias.data
                setattr(module, name, linear)
    return model


def prepacked(model: Any) -> Any:
    """model (fp32, on the CPU) with every linear layer, the lm_head included, a PackedLinear (in place); model
    unchanged where torch has no oneDNN."""
    if not torch.backends.mkldnn.is_available() or model.device.type != "cpu" or model.dtype != torch.float32:
        return model
    conv1d_as_linear(model)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear:
                setattr(module, name, PackedLinear(child.weight, child.bias))
    return model
