"""``dpctgan``: a conditional tabular GAN whose discriminator alone sees real rows, under DP-SGD.

CTGAN (Xu et al. 2019, "Modeling Tabular Data using Conditional GAN") on the rows of
``models.tabular``: a residual generator conditioned on one categorical column's value at a time,
a discriminator judging (row, condition) pairs. Only the discriminator is trained on real rows,
with Opacus DP-SGD (per-record clipping, Gaussian noise, Poisson sampling; the pattern of Opacus'
examples/dcgan.py); the generator learns through the discriminator on fake rows only, so it is a
post-processing of a DP model. Differences from CTGAN forced by DP: no PacGAN packing (a pack
would let one record move several clipped gradients), the non-saturating GAN loss instead of
WGAN-GP (a gradient penalty needs double backward through Opacus' hooks), and conditions drawn
from category frequencies that are PAID for: one Gaussian release of every categorical column's
counts, composed into ε, instead of CTGAN's training-by-sampling over the real frequencies.
"""

from __future__ import annotations

import json
import math
import secrets
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
from models.ctgan_modules import (
    COLLAPSE_THRESHOLD,
    CTGANGenerator,
    activate,
    cond_loss,
    discriminator,
    mode_collapse_figure,
)
from models.tabular import RowTransformer, propose_matching

WEIGHTS, META = "generator.safetensors", "dpctgan.json"
COVERAGE_SEED = 12345  # the fixed sample the per-epoch mode-collapse diagnostic reads


class DPCTGANConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # CTGAN's 128-dim noise and 256-wide residual generator (not private: no per-sample
    # gradients). Its two 256-wide discriminator layers cost 1.4 CPU s per DP step of 1,000
    # rows on bank-full; one 128-wide layer 0.25 s.
    noise_dim: int = Field(default=128, ge=1)
    generator_dims: tuple[int, ...] = (256, 256)
    discriminator_dims: tuple[int, ...] = (128,)
    modes: int = Field(default=10, ge=1)
    batch_size: int = Field(default=1000, ge=1)
    epochs: int = Field(default=8, ge=1)
    # CTGAN's Adam betas (0.5, 0.9); its lr 2e-4 is for ~100x more steps than DP affords.
    generator_lr: float = Field(default=1e-3, gt=0)
    discriminator_lr: float = Field(default=1e-3, gt=0)
    # Noise multiplier of the one release of category counts (sensitivity √(categorical
    # columns)); 20 costs ρ = 1/800 zCDP, little beside DP-SGD even at ε = 1.
    frequency_noise: float = Field(default=20.0, gt=0)
    # Gumbel-softmax temperature for the generator's one-hot blocks (CTGAN: 0.2).
    tau: float = Field(default=0.2, gt=0)
    # A column whose share of categories in the diagnostic sample falls below this is flagged.
    collapse_threshold: float = Field(default=COLLAPSE_THRESHOLD, ge=0, le=1)
    coverage_rows: int = Field(default=1000, ge=1)


class DPCTGAN(Generator):
    """DP-CTGAN behind the family interface; no likelihood (``has_log_prob`` false)."""

    family = "dpctgan"
    config_class = DPCTGANConfig

    def __init__(self, config: DPCTGANConfig | None = None):
        super().__init__(config)
        self.transformer: RowTransformer | None = None
        self.generator: CTGANGenerator | None = None
        self.frequencies: list[list[float]] = []  # per categorical block, DP, sums to 1
        self.history: list[dict] = []

    def _build(self, spec: TableSpec) -> None:
        self.transformer = t = RowTransformer(spec, self.config.modes)
        self.cond_width = sum(b.width for b in t.categorical)
        self.generator = CTGANGenerator(self.config.noise_dim, self.cond_width,
                                        self.config.generator_dims, t.width)

    # -- the conditional vector -------------------------------------------------------------
    def _paid_frequencies(self, data: torch.Tensor, budget: Budget,
                          gen: torch.Generator) -> list[dict]:
        """Category shares per categorical column, from counts + N(0, (σ_f √m)²) for m
        columns when private (each record adds one to one cell per column: L2 sensitivity
        √m); returns the release's events."""
        m = len(self.transformer.categorical)
        counts = [data[:, b.start:b.stop].sum(0) for b in self.transformer.categorical]
        events = []
        if budget.enabled and m:
            sigma = self.config.frequency_noise
            counts = [c + torch.randn(c.shape, generator=gen) * sigma * math.sqrt(m)
                      for c in counts]
            events = [accounting.gaussian(sigma)]
        self.frequencies = []
        for c in counts:
            c = c.clamp(min=0)
            share = c / c.sum() if c.sum() > 0 else torch.full_like(c, 1 / len(c))
            self.frequencies.append(share.tolist())
        return events

    def _conditions(self, n: int, gen: torch.Generator,
                    fixed: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(condition [n, C], chosen column [n]): a categorical column uniformly, one of its
        categories by the paid frequencies; ``fixed`` (column, category) for every row."""
        blocks = self.transformer.categorical
        c = torch.zeros(n, self.cond_width)
        if not blocks:
            return c, torch.zeros(n, dtype=torch.long)
        if fixed is None:
            col = torch.randint(len(blocks), (n,), generator=gen)
        else:
            col = torch.full((n,), fixed[0], dtype=torch.long)
        offset = 0
        for j, b in enumerate(blocks):
            rows = (col == j).nonzero()[:, 0]
            if len(rows):
                p = torch.tensor(self.frequencies[j])
                pick = (torch.full((len(rows),), fixed[1]) if fixed is not None else
                        torch.multinomial(p, len(rows), replacement=True, generator=gen))
                c[rows, offset + pick] = 1.0
            offset += b.width
        return c, col

    def _real_conditions(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """[B, C]: each real row's own value in one categorical column chosen uniformly."""
        blocks = self.transformer.categorical
        c = torch.zeros(len(x), self.cond_width)
        if not blocks:
            return c
        col = torch.randint(len(blocks), (len(x),), generator=gen)
        offset = 0
        for j, b in enumerate(blocks):
            rows = col == j
            c[rows, offset:offset + b.width] = x[rows, b.start:b.stop]
            offset += b.width
        return c

    # -- fit ----------------------------------------------------------------------------------
    def fit(self, table: pd.DataFrame, spec: TableSpec, budget: Budget, *, seed: int,
            on_progress: Callable[[dict], None] = lambda m: None) -> FitResult:
        """Paid category frequencies, then per Poisson batch one DP-SGD step of the
        discriminator on (real, fake) pairs and one plain step of the generator through it.
        ValueError if the table is empty or lacks a spec column."""
        start, cfg = time.monotonic(), self.config
        if len(table) == 0:
            raise ValueError("dpctgan: the training table has no rows")
        self.spec, self.history = spec, []
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self._build(spec)
            disc = discriminator(self.transformer.width + self.cond_width,
                                 cfg.discriminator_dims)
        data = torch.from_numpy(self.transformer.encode(table))
        gen = torch.Generator().manual_seed(seed if not budget.secure_mode
                                            else secrets.randbits(63))
        events = self._paid_frequencies(data, budget, gen)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.generator_lr,
                                 betas=(0.5, 0.9))
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.discriminator_lr, betas=(0.5, 0.9))
        dp = dpsgd.privatize(disc, opt_d, len(data), cfg.batch_size, cfg.epochs, budget, gen,
                             prior=events)
        batch_g = min(cfg.batch_size, len(data))  # fixed: the real batch's size is private
        steps = 0
        for epoch in range(1, cfg.epochs + 1):
            self.generator.train()
            sums = np.zeros(2)
            for (idx,) in dp.loader:
                steps += 1
                dp.optimizer.zero_grad(set_to_none=True)
                if len(idx) == 0:
                    if dp.private:
                        dpsgd.no_records(dp.optimizer)
                        dp.optimizer.step()
                else:
                    sums[0] += self._discriminator_step(dp, data[idx], gen)
                sums[1] += self._generator_step(dp.module, opt_g, batch_g, gen)
            d_loss, g_loss = sums / max(len(dp.loader), 1)
            metrics = {"epoch": epoch, "d_loss": d_loss, "g_loss": g_loss,
                       "epsilon": dp.epsilon(budget, steps), **self.mode_coverage()}
            self.history.append(metrics)
            on_progress(metrics)
        self.generator.eval()
        events = events + dp.events()
        prior = list(budget.prior)
        self.fit_result = FitResult(
            epsilon=dp.epsilon(budget), delta=budget.delta, accountant=budget.accountant,
            mechanism="DP-SGD (Opacus), Poisson sampling; Gaussian category counts"
            if dp.private else "none (non-private)", private=dp.private, events=events,
            params={**dp.params(cfg.epochs, cfg.batch_size, budget),
                    "frequency_noise": cfg.frequency_noise if dp.private else None},
            seconds=time.monotonic() - start, final_loss=float(d_loss),
            epsilon_check=accounting.epsilon_check(prior + events, budget.delta)
            if dp.private else None)
        return self.fit_result

    def plan(self, n_records: int, budget: Budget, spec: TableSpec | None = None) -> Plan:
        """DP-SGD after the one release of category counts (when the spec, or no spec, may
        hold a categorical column)."""
        counts = budget.enabled and (spec is None or any(
            f.kind == "categorical" for f in spec.structured))
        return dpsgd.plan(self, n_records, self.config.batch_size, self.config.epochs, budget,
                          spec, "DP-SGD (Opacus), Poisson sampling; Gaussian category counts",
                          [accounting.gaussian(self.config.frequency_noise)] if counts else [])

    def _discriminator_step(self, dp: dpsgd.Private, real: torch.Tensor,
                            gen: torch.Generator) -> float:
        """One DP-SGD step: pair i is (real_i, fake_i); two forward passes, one backward, so
        Opacus sums each pair's per-sample gradients before clipping (examples/dcgan.py)."""
        n = len(real)
        c_fake, _ = self._conditions(n, gen)
        with torch.no_grad():
            fake = activate(self.generator(torch.randn(n, self.config.noise_dim, generator=gen),
                                           c_fake), self.transformer, self.config.tau, gen)
        d_real = dp.module(torch.cat([real, self._real_conditions(real, gen)], 1))[:, 0]
        d_fake = dp.module(torch.cat([fake, c_fake], 1))[:, 0]
        losses = (F.binary_cross_entropy_with_logits(d_real, torch.ones(n), reduction="none")
                  + F.binary_cross_entropy_with_logits(d_fake, torch.zeros(n),
                                                       reduction="none"))
        losses.mean().backward()
        dp.optimizer.step()
        return losses.mean().item()

    def _generator_step(self, disc: nn.Module, opt_g: torch.optim.Optimizer, n: int,
                        gen: torch.Generator) -> float:
        """One plain step of the generator through a frozen discriminator, with Opacus'
        hooks off: no per-sample gradients, no clipping, no noise, no real rows."""
        c, _ = self._conditions(n, gen)
        raw = self.generator(torch.randn(n, self.config.noise_dim, generator=gen), c)
        hooks = getattr(disc, "disable_hooks", None)
        if hooks:
            disc.disable_hooks()
        disc.requires_grad_(False)
        try:
            fake = activate(raw, self.transformer, self.config.tau, gen)
            y = disc(torch.cat([fake, c], 1))[:, 0]
            loss = (F.binary_cross_entropy_with_logits(y, torch.ones(n))
                    + cond_loss(raw, c, self.transformer))
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
        finally:
            disc.requires_grad_(True)
            if hooks:
                disc.enable_hooks()
        return loss.item()

    # -- sampling and the mode-collapse diagnostic ------------------------------------------
    @torch.no_grad()
    def _generate(self, n: int, gen: torch.Generator, fixed: tuple[int, int] | None = None
                  ) -> list[dict]:
        was = self.generator.training
        self.generator.eval()
        c, _ = self._conditions(n, gen, fixed)
        raw = self.generator(torch.randn(n, self.config.noise_dim, generator=gen), c)
        self.generator.train(was)
        return self.transformer.sample(raw, gen)

    def _propose(self, n: int, seed: int, conditions: Mapping[str, str] | None) -> Proposal:
        """Rows from the generator; the first categorical condition goes into the conditional
        vector, the others (and numeric ones) by rejection."""
        fixed = None
        for j, b in enumerate(self.transformer.categorical):
            f = self.spec.field(b.field)
            if conditions and conditions.get(f.name) in f.values:
                fixed = (j, f.values.index(conditions[f.name]))
                break
        return propose_matching(lambda m, gen: self._generate(m, gen, fixed), self.spec, n,
                                seed, conditions)

    def mode_coverage(self) -> dict[str, float]:
        """``mode_coverage.<column>``: the share of each categorical column's spec values among
        ``coverage_rows`` generated rows (fixed seed); ``mode_coverage.min``; ``mode_collapse``
        1.0 if a column falls below ``collapse_threshold`` (mode collapse), else 0.0."""
        rows = self._generate(self.config.coverage_rows,
                              torch.Generator().manual_seed(COVERAGE_SEED))
        out = {}
        for f in self.spec.structured:
            if f.kind == "categorical":
                seen = {r[f.name] for r in rows} & set(f.values)
                out[f"mode_coverage.{f.name}"] = len(seen) / len(f.values)
        if out:
            out["mode_coverage.min"] = low = min(out.values())
            out["mode_collapse"] = float(low < self.config.collapse_threshold)
        return out

    # -- persistence --------------------------------------------------------------------------
    def _save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.generator.state_dict().items()},
                  directory / WEIGHTS)
        (directory / META).write_text(json.dumps(
            {"transformer": self.transformer.to_dict(), "frequencies": self.frequencies,
             "history": self.history}, indent=1))

    def _load(self, directory: Path) -> None:
        from safetensors.torch import load_file

        meta = json.loads((directory / META).read_text())
        self._build(RowTransformer.from_dict(meta["transformer"]).spec)
        self.frequencies, self.history = meta["frequencies"], meta["history"]
        self.generator.load_state_dict(load_file(directory / WEIGHTS))
        self.generator.eval()


__all__ = ["DPCTGAN", "DPCTGANConfig", "mode_collapse_figure"]
