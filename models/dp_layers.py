"""Opacus per-sample gradients for the transformers ``Conv1D`` layer that GPT-2 is built from.

Opacus ships samplers for ``nn.Linear`` but not for this layer, and would otherwise fall back to
the slower functorch path. ``Conv1D`` computes ``x @ W + b`` with ``W`` stored as [in, out], i.e.
a linear layer with a transposed weight, so the per-sample gradient is the outer product of each
sample's activations and backprops summed over time.
"""

from __future__ import annotations

import torch
from opacus.grad_sample import GradSampleModule
from opacus.grad_sample.utils import register_grad_sampler
from transformers.pytorch_utils import Conv1D


def conv1d_grad_sample(layer: Conv1D, activations: list[torch.Tensor],
                       backprops: torch.Tensor) -> dict[torch.nn.Parameter, torch.Tensor]:
    x = activations[0]                                                   # [B, T, in]
    grads = {}
    if layer.weight.requires_grad:
        grads[layer.weight] = torch.einsum("n...i,n...j->nij", x, backprops)  # [B, in, out]
    if layer.bias is not None and layer.bias.requires_grad:
        grads[layer.bias] = torch.einsum("n...k->nk", backprops)         # [B, out]
    return grads


def install() -> None:
    """Register the sampler with Opacus (idempotent)."""
    if Conv1D not in GradSampleModule.GRAD_SAMPLERS:
        register_grad_sampler(Conv1D)(conv1d_grad_sample)
