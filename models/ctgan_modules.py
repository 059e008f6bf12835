"""The networks of ``dpctgan`` (CTGAN, Xu et al. 2019, §4.4), its output activation and
condition loss, and the mode-collapse figure its training history draws."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.tabular import RowTransformer

# What the figure draws as the collapse line; DPCTGANConfig.collapse_threshold's default.
COLLAPSE_THRESHOLD = 0.5


class Residual(nn.Module):
    """CTGAN's generator block: [B, i] → [B, i + o], the input kept beside ReLU(BN(fc(x)))."""

    def __init__(self, i: int, o: int):
        super().__init__()
        self.fc, self.bn = nn.Linear(i, o), nn.BatchNorm1d(o)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.relu(self.bn(self.fc(x))), x], dim=1)


class CTGANGenerator(nn.Module):
    """(noise [B, Z], condition [B, C]) → raw row [B, D] (offsets pre-tanh, one-hot logits).
    BatchNorm is fine here: the generator never takes per-sample gradients."""

    def __init__(self, noise_dim: int, cond: int, dims: tuple[int, ...], width: int):
        super().__init__()
        layers, i = [], noise_dim + cond
        for o in dims:
            layers.append(Residual(i, o))
            i += o
        self.body, self.out = nn.Sequential(*layers), nn.Linear(i, width)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(torch.cat([z, c], dim=1)))


def discriminator(width: int, dims: tuple[int, ...]) -> nn.Sequential:
    """(row ⊕ condition) [B, D + C] → logit [B, 1]; no BatchNorm (per-sample gradients)."""
    layers, i = [], width
    for o in dims:
        layers += [nn.Linear(i, o), nn.LeakyReLU(0.2), nn.Dropout(0.5)]
        i = o
    return nn.Sequential(*layers, nn.Linear(i, 1))


def activate(raw: torch.Tensor, transformer: RowTransformer, tau: float,
             gen: torch.Generator) -> torch.Tensor:
    """[B, D]: tanh on offsets, Gumbel-softmax (Jang et al. 2017) at temperature ``tau`` on
    one-hot blocks, its noise from ``gen``."""
    parts = []
    for b in transformer.blocks:
        part = raw[:, b.start:b.stop]
        if b.kind == "offset":
            parts.append(torch.tanh(part))
        else:
            u = torch.rand(part.shape, generator=gen).clamp(1e-10, 1 - 1e-10)
            parts.append(F.softmax((part - torch.log(-torch.log(u))) / tau, 1))
    return torch.cat(parts, dim=1)


def cond_loss(raw: torch.Tensor, c: torch.Tensor, transformer: RowTransformer) -> torch.Tensor:
    """CTGAN's condition loss: the cross-entropy of each row's conditioned block against the
    value its condition [B, C] asks for, averaged over the batch."""
    loss, offset = torch.zeros(()), 0
    for b in transformer.categorical:
        target = c[:, offset:offset + b.width]
        logp = F.log_softmax(raw[:, b.start:b.stop], dim=1)
        loss = loss - (target * logp).sum() / max(len(raw), 1)
        offset += b.width
    return loss


def mode_collapse_figure(history: list[dict]):
    """A matplotlib Figure: each categorical column's mode coverage per epoch (from the fit's
    ``on_progress`` metrics), the collapse threshold dashed. No pyplot: no global state."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    epochs = [h["epoch"] for h in history]
    names = sorted({k for h in history for k in h if k.startswith("mode_coverage.")})
    for name in names:
        ax.plot(epochs, [h.get(name, np.nan) for h in history], label=name.split(".", 1)[1],
                lw=2.5 if name.endswith(".min") else 1)
    ax.axhline(COLLAPSE_THRESHOLD, ls="--", color="grey")
    ax.set(xlabel="epoch", ylabel="share of categories generated", ylim=(0, 1.05),
           title="DP-CTGAN mode coverage")
    if names:
        ax.legend(fontsize=7, ncol=2)
    return fig
