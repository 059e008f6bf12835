"""``dcgan``: a conditional DCGAN whose discriminator alone sees real images, under DP-SGD.

DCGAN (Radford et al. 2016, "Unsupervised Representation Learning with Deep Convolutional
GANs"): a generator of transposed convolutions with BatchNorm and ReLU, tanh out; a
discriminator of strided convolutions with LeakyReLU 0.2; the non-saturating GAN loss, Adam
with β₁ = 0.5. Conditional on the label (one-hot planes on the discriminator's input, one-hot
beside the generator's noise; Mirza & Osindero 2014) when the spec has a label column. Only the
discriminator is trained on real images, with Opacus DP-SGD (per-image clipping, Gaussian
noise, Poisson sampling; the pattern of Opacus' examples/dcgan.py), so it uses GroupNorm where
DCGAN has BatchNorm; the generator learns through it on fake images only, a post-processing.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from models import accounting, dpsgd
from models import image_modules as im
from models.base import Budget, FitResult, Plan, TableSpec

GENERATOR, DISCRIMINATOR, META = ("generator.safetensors", "discriminator.safetensors",
                                  "dcgan.json")
MECHANISM = "DP-SGD (Opacus), Poisson sampling, discriminator only"


class DCGANConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Radford et al. use a 100-dim noise and 128–1024 channels for 64×64 scenes; 8×8–32×32
    # digits need far less, and DP-SGD's per-sample gradients cost in proportion to the
    # discriminator's weights.
    noise_dim: int = Field(default=64, ge=1)
    generator_width: int = Field(default=32, ge=2)
    discriminator_width: int = Field(default=32, ge=2)
    # DP-SGD likes large batches (noise per step is fixed, signal grows with the batch).
    batch_size: int = Field(default=128, ge=1)
    epochs: int = Field(default=30, ge=1)
    # DCGAN's lr 2e-4 is for ~100× more steps than DP affords on a small dataset. On
    # sklearn's digits (ε 8, 30 epochs) a discriminator at 2e-4 left one picture per label,
    # at 1e-3 digit shapes per label; non-private, 1e-3 also drew the more varied images.
    generator_lr: float = Field(default=1e-3, gt=0)
    discriminator_lr: float = Field(default=1e-3, gt=0)
    # DCGAN's BatchNorm in the generator is allowed (it takes no per-sample gradients), but
    # sampling uses its running statistics (so an image does not depend on its batch), and
    # after 20 epochs on the digits those drew one blot for every label; GroupNorm drew digits.
    generator_norm: Literal["batch", "group"] = "group"
    # Grids of samples (per label) every so many epochs, and at the last one.
    grid_every: int = Field(default=5, ge=1)
    coverage_rows: int = Field(default=200, ge=2)
    # diversity.min (intensity std across a label's images, 0–0.5) below this flags mode
    # collapse: sklearn's digits measure 0.12–0.19 per label; generators that drew near
    # copies of one picture per label measured 0.016–0.034. On the digits, 30 epochs: 0.063–
    # 0.103 non-private, 0.024–0.036 at ε 8 (flagged: the DP GAN draws few shapes a label).
    collapse_threshold: float = Field(default=0.05, ge=0, le=0.5)


class Discriminator(nn.Module):
    """(image [B, C, H, W] in [-1, 1], label [B] or None) → logit [B] ("real" higher)."""

    def __init__(self, lay: im.Layout, width: int):
        super().__init__()
        self.features = im.Downsampler(lay, width)
        self.out = nn.Linear(self.features.features, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.out(self.features(x, y))[:, 0]


class DCGAN(im.ImageGenerator):
    """The DP DCGAN behind the family interface; no likelihood, a discriminator score."""

    family = "dcgan"
    config_class = DCGANConfig

    def __init__(self, config: DCGANConfig | None = None):
        super().__init__(config)
        self.layout: im.Layout | None = None
        self.generator: im.Upsampler | None = None
        self.discriminator: Discriminator | None = None
        self.history: list[dict] = []

    def _build(self, spec: TableSpec) -> None:
        cfg = self.config
        self.layout = im.layout(spec)
        self.generator = im.Upsampler(self.layout, cfg.noise_dim, cfg.generator_width,
                                      cfg.generator_norm)
        self.discriminator = Discriminator(self.layout, cfg.discriminator_width)

    def fit(self, table: pd.DataFrame, spec: TableSpec, budget: Budget, *, seed: int,
            on_progress: Callable[[dict], None] = lambda m: None) -> FitResult:
        """Per Poisson batch one DP-SGD step of the discriminator on (real, fake) pairs and
        one plain step of the generator through it. ``on_progress`` per epoch: ``d_loss``,
        ``g_loss``, ``loss`` (= d_loss), ``epsilon``, the diversity diagnostic, and
        ``grid_png`` every ``grid_every`` epochs. ValueError if the table is empty or does not
        match the spec (see ``image_modules.encode``)."""
        start, cfg = time.monotonic(), self.config
        if len(table) == 0:
            raise ValueError("dcgan: the training table has no rows")
        self.spec, self.history = spec, []
        with torch.random.fork_rng():  # weight init from the seed, global RNG left as it was
            torch.manual_seed(seed)
            self._build(spec)
        x, y = im.encode(table, spec)
        x = x * 2 - 1  # DCGAN's tanh range
        gen = torch.Generator().manual_seed(seed if not budget.secure_mode
                                            else secrets.randbits(63))
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.generator_lr,
                                 betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.discriminator_lr,
                                 betas=(0.5, 0.999))
        dp = dpsgd.privatize(self.discriminator, opt_d, len(x), cfg.batch_size, cfg.epochs,
                             budget, gen)
        batch_g = min(cfg.batch_size, len(x))  # fixed: the real batch's size is private
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
                    sums[0] += self._discriminator_step(dp, x[idx], None if y is None
                                                        else y[idx], gen)
                sums[1] += self._generator_step(dp.module, opt_g, batch_g, gen)
            d_loss, g_loss = sums / max(len(dp.loader), 1)
            metrics = {"epoch": epoch, "loss": float(d_loss), "d_loss": float(d_loss),
                       "g_loss": float(g_loss), "epsilon": dp.epsilon(budget, steps),
                       **self.mode_coverage()}
            self.history.append(metrics)
            on_progress({**metrics, **({"grid_png": self.grid()} if epoch % cfg.grid_every == 0
                                       or epoch == cfg.epochs else {})})
        self.generator.eval()
        self.discriminator.eval()
        events = dp.events()
        self.fit_result = FitResult(
            epsilon=dp.epsilon(budget), delta=budget.delta, accountant=budget.accountant,
            mechanism=MECHANISM if dp.private else "none (non-private)", private=dp.private,
            events=events, params=dp.params(cfg.epochs, cfg.batch_size, budget),
            seconds=time.monotonic() - start, final_loss=float(d_loss),
            epsilon_check=accounting.epsilon_check(list(budget.prior) + events, budget.delta)
            if dp.private else None)
        return self.fit_result

    def plan(self, n_records: int, budget: Budget, spec: TableSpec | None = None) -> Plan:
        return dpsgd.plan(self, n_records, self.config.batch_size, self.config.epochs, budget,
                          spec, MECHANISM)

    def _fake(self, n: int, y: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
        """[n, C, H, W] in [-1, 1] from the generator (with its gradients)."""
        return torch.tanh(self.generator(torch.randn(n, self.config.noise_dim, generator=gen),
                                         y))

    def _discriminator_step(self, dp: dpsgd.Private, real: torch.Tensor,
                            y: torch.Tensor | None, gen: torch.Generator) -> float:
        """One DP-SGD step: pair i is (real_i, fake_i); two forward passes, one backward, so
        Opacus sums each pair's per-sample gradients before clipping (examples/dcgan.py)."""
        n = len(real)
        y_fake = None if y is None else im.labels_for(self.layout, n, gen, None, None)
        with torch.no_grad():
            fake = self._fake(n, y_fake, gen)
        losses = (F.binary_cross_entropy_with_logits(dp.module(real, y), torch.ones(n),
                                                     reduction="none")
                  + F.binary_cross_entropy_with_logits(dp.module(fake, y_fake), torch.zeros(n),
                                                       reduction="none"))
        losses.mean().backward()
        dp.optimizer.step()
        return losses.mean().item()

    def _generator_step(self, disc: nn.Module, opt_g: torch.optim.Optimizer, n: int,
                        gen: torch.Generator) -> float:
        """One plain step of the generator through a frozen discriminator, with Opacus'
        hooks off: no per-sample gradients, no clipping, no noise, no real images."""
        y = im.labels_for(self.layout, n, gen, None, None) if self.layout.classes else None
        hooks = getattr(disc, "disable_hooks", None)
        if hooks:
            disc.disable_hooks()
        disc.requires_grad_(False)
        try:
            loss = F.binary_cross_entropy_with_logits(disc(self._fake(n, y, gen), y),
                                                      torch.ones(n))  # non-saturating
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
        finally:
            disc.requires_grad_(True)
            if hooks:
                disc.enable_hooks()
        return loss.item()

    # -- sampling, the diagnostic, the audit's score ------------------------------------------
    @torch.no_grad()
    def _images(self, labels: torch.Tensor, gen: torch.Generator) -> np.ndarray:
        """[len(labels), H, W, C] uint8, the generator in eval mode (BatchNorm's running
        statistics: a row's image does not depend on the rest of its batch)."""
        was = self.generator.training
        self.generator.eval()
        out = []
        for part in labels.split(512):
            fake = self._fake(len(part), part if self.layout.classes else None, gen)
            out.append(im.to_uint8((fake + 1) / 2))
        self.generator.train(was)
        return np.concatenate(out) if out else np.zeros((0, *self.layout.shape), np.uint8)

    @torch.no_grad()
    def discriminator_score(self, rows: pd.DataFrame) -> np.ndarray:
        """[len(rows)] the discriminator's logit for each image with its label (higher: more
        "real"), for the membership audit. ValueError as ``image_modules.encode``."""
        x, y = im.encode(rows, self.spec)
        self.discriminator.eval()
        scores = [self.discriminator(x[i:i + 512] * 2 - 1, None if y is None else y[i:i + 512])
                  for i in range(0, len(x), 512)]
        return torch.cat(scores).numpy().astype(float) if scores else np.zeros(0)

    # -- persistence --------------------------------------------------------------------------
    def _save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        for module, name in ((self.generator, GENERATOR), (self.discriminator, DISCRIMINATOR)):
            save_file({k: v.contiguous() for k, v in module.state_dict().items()},
                      directory / name)
        (directory / META).write_text(json.dumps({"history": self.history}, indent=1))

    def _load(self, directory: Path) -> None:
        from safetensors.torch import load_file

        self._build(self.spec)
        self.generator.load_state_dict(load_file(directory / GENERATOR))
        self.discriminator.load_state_dict(load_file(directory / DISCRIMINATOR))
        self.generator.eval()
        self.discriminator.eval()
        self.history = json.loads((directory / META).read_text())["history"]
