"""Opacus samplers for the transformers ``Conv1D`` layer that GPT-2 is built from.

Opacus ships samplers for ``nn.Linear`` but not for this layer, and would otherwise fall back to
the slower functorch path, and ghost clipping would not apply to it. ``Conv1D`` computes
``x @ W + b`` with ``W`` stored as [in, out], i.e. a linear layer with a transposed weight. The
norm sampler is orientation-free, so it also replaces Opacus' always-ghost one for ``nn.Linear``
(the LM head: vocab × width is small beside T² for our sequence lengths).
"""

from __future__ import annotations

import torch
from opacus.grad_sample import GradSampleModule, GradSampleModuleFastGradientClipping
from opacus.grad_sample.utils import register_grad_sampler, register_norm_sampler
from transformers.pytorch_utils import Conv1D


def conv1d_grad_sample(layer: Conv1D, activations: list[torch.Tensor],
                       backprops: torch.Tensor) -> dict[torch.nn.Parameter, torch.Tensor]:
    """Per-sample gradients: each sample's activations ⊗ backprops, summed over time."""
    x = activations[0].to(backprops.dtype)                               # [B, T, in]
    grads = {}
    if layer.weight.requires_grad:
        grads[layer.weight] = torch.einsum("n...i,n...j->nij", x, backprops)  # [B, in, out]
    if layer.bias is not None and layer.bias.requires_grad:
        grads[layer.bias] = torch.einsum("n...k->nk", backprops)         # [B, out]
    return grads


def linear_norm_sample(layer: Conv1D | torch.nn.Linear, activations: list[torch.Tensor],
                       backprops: torch.Tensor) -> dict[torch.nn.Parameter, torch.Tensor]:
    """Per-sample gradient norms without keeping per-sample gradients (ghost clipping).

    ‖Σ_t x_t g_tᵀ‖²_F = Σ_{t,s} (x_t·x_s)(g_t·g_s) costs T² per sample, while building each
    gradient costs in·out; take the cheaper one per layer ("mixed ghost clipping", Bu et al.,
    2022, arXiv:2210.00038). Either way only a [B] vector outlives this call.
    """
    b = backprops.shape[0]
    x = activations[0].to(backprops.dtype).reshape(b, -1, activations[0].shape[-1])  # [B, T, in]
    backprops = backprops.reshape(b, -1, backprops.shape[-1])                       # [B, T, out]
    norms = {}
    if layer.weight.requires_grad:
        t = x.shape[1]
        if t * t <= layer.weight.numel():
            xx = torch.bmm(x, x.transpose(1, 2))                          # [B, T, T]
            gg = torch.bmm(backprops, backprops.transpose(1, 2))          # [B, T, T]
            norms[layer.weight] = (xx * gg).sum((1, 2)).clamp(min=0).sqrt()
        else:
            per_sample = torch.bmm(x.transpose(1, 2), backprops)          # [B, in, out]
            norms[layer.weight] = per_sample.flatten(1).norm(2, dim=1)
    if layer.bias is not None and layer.bias.requires_grad:
        norms[layer.bias] = backprops.sum(1).norm(2, dim=1)               # [B]
    return norms


def install() -> None:
    """Register the samplers with Opacus (idempotent)."""
    if Conv1D not in GradSampleModule.GRAD_SAMPLERS:
        register_grad_sampler(Conv1D)(conv1d_grad_sample)
    norm_samplers = GradSampleModuleFastGradientClipping.NORM_SAMPLERS
    if norm_samplers.get(Conv1D) is not linear_norm_sample:
        register_norm_sampler([Conv1D, torch.nn.Linear])(linear_norm_sample)
