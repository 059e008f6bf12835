"""``tvae``: a tabular variational autoencoder trained with DP-SGD.

TVAE of Xu et al. 2019 ("Modeling Tabular Data using Conditional GAN", §5) on the rows of
``models.tabular``: an MLP encoder q(z|x) = N(μ(x), diag σ²(x)), an MLP decoder p(x|z) with a
Gaussian per numeric offset and a categorical per one-hot block, trained on the ELBO as Kingma &
Welling (2014) write it, E_q[log p(x|z)] − KL(q(z|x) ‖ N(0, I)), by Opacus DP-SGD.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from models import accounting, dpsgd
from models.base import Budget, FitResult, Generator, Plan, Proposal, TableSpec
from models.tabular import RowTransformer, propose_matching

WEIGHTS, TRANSFORMER = "tvae.safetensors", "transformer.json"
LOG_2PI = math.log(2 * math.pi)


class TVAEConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Xu et al. use two 128-wide layers and a 128-dim latent. DP-SGD's per-sample gradients
    # cost in proportion to the weights: on bank-full (45,211 rows, 123 encoded columns) a
    # 1,000-row step took 0.67 CPU s at their size, 0.37 s with one layer; this size and 8
    # epochs fit in a few minutes on 2 cores.
    latent_dim: int = Field(default=32, ge=1)
    hidden: tuple[int, ...] = (128,)
    # Equal-width modes per numeric over its public bounds (models.tabular).
    modes: int = Field(default=10, ge=1)
    # DP-SGD likes large batches: noise per step is fixed, signal grows with the batch.
    batch_size: int = Field(default=1000, ge=1)
    epochs: int = Field(default=8, ge=1)
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=1e-5, ge=0)
    # Monte Carlo samples of z per record in log_prob's ELBO estimate.
    elbo_samples: int = Field(default=8, ge=1)


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Encoder and decoder; ``forward(x [B, D], eps [B, L])`` → (raw [B, D] (offsets pre-tanh,
    one-hot logits), log σ of each numeric offset [B, M], μ [B, L], log σ²_z [B, L])."""

    def __init__(self, width: int, numerics: int, cfg: TVAEConfig):
        super().__init__()
        h = list(cfg.hidden)
        self.encoder = _mlp([width, *h])
        self.mu = nn.Linear(h[-1], cfg.latent_dim)
        self.logvar = nn.Linear(h[-1], cfg.latent_dim)
        self.decoder = _mlp([cfg.latent_dim, *h[::-1]])
        self.out = nn.Linear(h[0], width)
        self.scale = nn.Linear(h[0], max(numerics, 1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.mu(h), self.logvar(h).clamp(-10, 10)

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.decoder(z)
        # σ of an offset in [0.01, 1], as in Xu et al.'s TVAE: α lives in [-1, 1].
        return self.out(h), self.scale(h).clamp(math.log(0.01), 0.0)

    def forward(self, x: torch.Tensor, eps: torch.Tensor):
        mu, logvar = self.encode(x)
        z = mu + eps * (0.5 * logvar).exp()  # the reparameterization trick
        raw, logscale = self.decode(z)
        return raw, logscale, mu, logvar


def negative_elbo(raw: torch.Tensor, logscale: torch.Tensor, mu: torch.Tensor,
                  logvar: torch.Tensor, x: torch.Tensor, transformer: RowTransformer
                  ) -> torch.Tensor:
    """[B] −ELBO per record (nats) for one z sample: the Gaussian NLL of each present numeric
    offset, the cross-entropy of each one-hot block (an all-zero block adds nothing), and
    KL(N(μ, σ²) ‖ N(0, I)) in closed form (Kingma & Welling 2014, appendix B)."""
    nll = torch.zeros(len(x))
    k = 0
    for b in transformer.blocks:
        if b.kind == "offset":
            present = x[:, transformer.block(b.field, "mode").start:
                        transformer.block(b.field, "mode").stop].sum(1)
            s = logscale[:, k]
            z = (x[:, b.start] - torch.tanh(raw[:, b.start])) / s.exp()
            nll = nll + present * (0.5 * z ** 2 + s + 0.5 * LOG_2PI)
            k += 1
        else:
            logp = F.log_softmax(raw[:, b.start:b.stop], dim=1)
            nll = nll - (x[:, b.start:b.stop] * logp).sum(1)
    kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1)
    return nll + kl


class TVAE(Generator):
    """The DP tabular VAE (Xu et al. 2019) behind the family interface."""

    family = "tvae"
    config_class = TVAEConfig
    has_log_prob = True

    def __init__(self, config: TVAEConfig | None = None):
        super().__init__(config)
        self.transformer: RowTransformer | None = None
        self.vae: VAE | None = None

    def _build(self, spec: TableSpec) -> None:
        self.transformer = RowTransformer(spec, self.config.modes)
        numerics = sum(b.kind == "offset" for b in self.transformer.blocks)
        self.vae = VAE(self.transformer.width, numerics, self.config)

    def fit(self, table: pd.DataFrame, spec: TableSpec, budget: Budget, *, seed: int,
            on_progress: Callable[[dict], None] = lambda m: None) -> FitResult:
        """DP-SGD on the negative ELBO over ``table``'s rows (see ``models.dpsgd``).
        ValueError if the table is empty or lacks a spec column."""
        start, cfg = time.monotonic(), self.config
        if len(table) == 0:
            raise ValueError("tvae: the training table has no rows")
        self.spec = spec
        with torch.random.fork_rng():  # weight init from the seed, global RNG left as it was
            torch.manual_seed(seed)
            self._build(spec)
        data = torch.from_numpy(self.transformer.encode(table))
        gen = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(self.vae.parameters(), lr=cfg.lr,
                                     weight_decay=cfg.weight_decay)
        dp = dpsgd.privatize(self.vae, optimizer, len(data), cfg.batch_size, cfg.epochs,
                             budget, gen)
        self.vae.train()
        steps, loss = 0, math.nan
        for epoch in range(1, cfg.epochs + 1):
            total, count = 0.0, 0
            for (idx,) in dp.loader:
                dp.optimizer.zero_grad(set_to_none=True)
                steps += 1
                if len(idx) == 0:
                    if dp.private:
                        dpsgd.no_records(dp.optimizer)
                        dp.optimizer.step()
                    continue
                x = data[idx]
                eps = torch.randn(len(idx), cfg.latent_dim, generator=gen)
                losses = negative_elbo(*dp.module(x, eps), x, self.transformer)
                losses.mean().backward()
                dp.optimizer.step()
                total, count = total + losses.sum().item(), count + len(idx)
            loss = total / max(count, 1)
            on_progress({"epoch": epoch, "loss": loss, "epsilon": dp.epsilon(budget, steps)})
        self.vae.eval()
        events = dp.events()
        prior = list(budget.prior)
        self.fit_result = FitResult(
            epsilon=dp.epsilon(budget), delta=budget.delta, accountant=budget.accountant,
            mechanism="DP-SGD (Opacus), Poisson sampling" if dp.private
            else "none (non-private)", private=dp.private, events=events,
            params=dp.params(cfg.epochs, cfg.batch_size, budget),
            seconds=time.monotonic() - start, final_loss=loss,
            epsilon_check=accounting.epsilon_check(prior + events, budget.delta)
            if dp.private else None)
        return self.fit_result

    def plan(self, n_records: int, budget: Budget, spec: TableSpec | None = None) -> Plan:
        return dpsgd.plan(self, n_records, self.config.batch_size, self.config.epochs, budget,
                          spec, "DP-SGD (Opacus), Poisson sampling")

    @torch.no_grad()
    def _generate(self, n: int, gen: torch.Generator) -> list[dict]:
        z = torch.randn(n, self.config.latent_dim, generator=gen)
        raw, logscale = self.vae.decode(z)
        return self.transformer.sample(raw, gen, logscale)

    def _propose(self, n: int, seed: int, conditions: Mapping[str, str] | None) -> Proposal:
        """z ~ N(0, I), x ~ p(x|z); conditions by rejection (``tabular.propose_matching``)."""
        return propose_matching(self._generate, self.spec, n, seed, conditions)

    @torch.no_grad()
    def log_prob(self, rows: pd.DataFrame) -> np.ndarray:
        """[len(rows)] the ELBO of each record (nats), a LOWER BOUND on log p(x), estimated
        with ``elbo_samples`` draws of z (fixed seed: the same rows give the same figures). The
        density is of the encoded row (mode one-hot and offset α), not of the raw numbers."""
        x = torch.from_numpy(self.transformer.encode(rows))
        gen = torch.Generator().manual_seed(0)
        total = torch.zeros(len(x))
        for _ in range(self.config.elbo_samples):
            eps = torch.randn(len(x), self.config.latent_dim, generator=gen)
            total += negative_elbo(*self.vae(x, eps), x, self.transformer)
        return (-total / self.config.elbo_samples).numpy().astype(float)

    def _save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.vae.state_dict().items()},
                  directory / WEIGHTS)
        (directory / TRANSFORMER).write_text(json.dumps(self.transformer.to_dict(), indent=1))

    def _load(self, directory: Path) -> None:
        from safetensors.torch import load_file

        spec = RowTransformer.from_dict(json.loads((directory / TRANSFORMER).read_text())).spec
        self._build(spec)
        self.vae.load_state_dict(load_file(directory / WEIGHTS))
        self.vae.eval()
