"""``convvae``: a conditional convolutional variational autoencoder trained with DP-SGD.

The VAE of Kingma & Welling (2014, "Auto-Encoding Variational Bayes") with convolutional
networks: an encoder q(z|x, y) = N(μ, diag σ²) of strided convolutions, z = μ + σ·ε (the
reparameterization trick), a decoder p(x|z, y) of transposed convolutions, trained on the ELBO
E_q[log p(x|z, y)] − KL(q(z|x, y) ‖ N(0, I)); conditional on the label y (Sohn et al. 2015)
when the spec has a label column. The likelihood is Bernoulli over pixel intensities scaled
to [0, 1], as pytorch/examples' VAE writes it (a cross-entropy, not a normalized density for
grey levels). Opacus DP-SGD on the whole model (GroupNorm, no BatchNorm).
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from models import accounting, dpsgd
from models import image_modules as im
from models.base import Budget, FitResult, Plan, TableSpec

WEIGHTS = "convvae.safetensors"
MECHANISM = "DP-SGD (Opacus), Poisson sampling"


class ConvVAEConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    latent_dim: int = Field(default=16, ge=1)
    # Channels of the first convolution (doubling per stage); DP-SGD's per-sample gradients
    # cost in proportion to the weights.
    width: int = Field(default=32, ge=2)
    batch_size: int = Field(default=128, ge=1)
    epochs: int = Field(default=30, ge=1)
    lr: float = Field(default=2e-3, gt=0)
    # Grids of samples (per label) every so many epochs, and at the last one.
    grid_every: int = Field(default=5, ge=1)
    coverage_rows: int = Field(default=200, ge=2)
    # diversity.min (intensity std across a label's images, 0–0.5) below this flags mode
    # collapse. 0: off. A VAE draws decoder means, smooth by construction: on the digits the
    # non-private model, whose samples a classifier reads as the right digit 99.9 % of the time,
    # measured 0.022–0.032, below its DP versions (0.034–0.064) and below what flags a GAN's
    # collapse (dcgan's 0.05), so the figure is logged but flags nothing by default.
    collapse_threshold: float = Field(default=0.0, ge=0, le=0.5)
    # Monte Carlo samples of z per image in log_prob's ELBO estimate.
    elbo_samples: int = Field(default=8, ge=1)


class Autoencoder(nn.Module):
    """Encoder and decoder; ``forward(x [B, C, H, W] in [0, 1], y [B] or None, eps [B, L])``
    → (logits [B, C, H, W], μ [B, L], log σ² [B, L])."""

    def __init__(self, lay: im.Layout, cfg: ConvVAEConfig):
        super().__init__()
        self.encoder = im.Downsampler(lay, cfg.width)
        self.moments = nn.Linear(self.encoder.features, 2 * cfg.latent_dim)
        self.decoder = im.Upsampler(lay, cfg.latent_dim, cfg.width, "group")

    def encode(self, x: torch.Tensor, y: torch.Tensor | None):
        mu, logvar = self.moments(self.encoder(x, y)).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None, eps: torch.Tensor):
        mu, logvar = self.encode(x, y)
        z = mu + eps * (0.5 * logvar).exp()  # the reparameterization trick
        return self.decoder(z, y), mu, logvar


def reconstruction(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[B] −log p(x|z) (nats): the Bernoulli cross-entropy of each pixel, summed per image."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """[B] KL(N(μ, σ²) ‖ N(0, I)) in closed form (Kingma & Welling 2014, appendix B)."""
    return 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1)


def negative_elbo(logits: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                  x: torch.Tensor) -> torch.Tensor:
    """[B] −ELBO per image (nats) for one z sample."""
    return reconstruction(logits, x) + kl(mu, logvar)


class ConvVAE(im.ImageGenerator):
    """The DP convolutional VAE behind the family interface."""

    family = "convvae"
    config_class = ConvVAEConfig
    has_log_prob = True

    def __init__(self, config: ConvVAEConfig | None = None):
        super().__init__(config)
        self.layout: im.Layout | None = None
        self.vae: Autoencoder | None = None

    def _build(self, spec: TableSpec) -> None:
        self.layout = im.layout(spec)
        self.vae = Autoencoder(self.layout, self.config)

    def fit(self, table: pd.DataFrame, spec: TableSpec, budget: Budget, *, seed: int,
            on_progress: Callable[[dict], None] = lambda m: None) -> FitResult:
        """DP-SGD on the negative ELBO over ``table``'s images (see ``models.dpsgd``).
        ``on_progress`` per epoch: ``loss`` (−ELBO, nats an image), ``reconstruction``,
        ``kl``, ``epsilon``, the diversity diagnostic, ``grid_png`` every ``grid_every``
        epochs. ValueError if the table is empty or does not match the spec."""
        start, cfg = time.monotonic(), self.config
        if len(table) == 0:
            raise ValueError("convvae: the training table has no rows")
        self.spec = spec
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self._build(spec)
        x, y = im.encode(table, spec)
        gen = torch.Generator().manual_seed(seed if not budget.secure_mode
                                            else secrets.randbits(63))
        optimizer = torch.optim.Adam(self.vae.parameters(), lr=cfg.lr)
        dp = dpsgd.privatize(self.vae, optimizer, len(x), cfg.batch_size, cfg.epochs, budget,
                             gen)
        steps, loss = 0, math.nan
        for epoch in range(1, cfg.epochs + 1):
            self.vae.train()
            sums, count = np.zeros(2), 0
            for (idx,) in dp.loader:
                dp.optimizer.zero_grad(set_to_none=True)
                steps += 1
                if len(idx) == 0:
                    if dp.private:
                        dpsgd.no_records(dp.optimizer)
                        dp.optimizer.step()
                    continue
                xb, yb = x[idx], None if y is None else y[idx]
                logits, mu, logvar = dp.module(xb, yb, torch.randn(len(idx), cfg.latent_dim,
                                                                   generator=gen))
                rec, div = reconstruction(logits, xb), kl(mu, logvar)
                (rec + div).mean().backward()
                dp.optimizer.step()
                sums += [rec.sum().item(), div.sum().item()]
                count += len(idx)
            rec_mean, kl_mean = sums / max(count, 1)
            loss = float(rec_mean + kl_mean)
            metrics = {"epoch": epoch, "loss": loss, "reconstruction": float(rec_mean),
                       "kl": float(kl_mean), "epsilon": dp.epsilon(budget, steps),
                       **self.mode_coverage()}
            on_progress({**metrics, **({"grid_png": self.grid()} if epoch % cfg.grid_every == 0
                                       or epoch == cfg.epochs else {})})
        self.vae.eval()
        events = dp.events()
        self.fit_result = FitResult(
            epsilon=dp.epsilon(budget), delta=budget.delta, accountant=budget.accountant,
            mechanism=MECHANISM if dp.private else "none (non-private)", private=dp.private,
            events=events, params=dp.params(cfg.epochs, cfg.batch_size, budget),
            seconds=time.monotonic() - start, final_loss=loss,
            epsilon_check=accounting.epsilon_check(list(budget.prior) + events, budget.delta)
            if dp.private else None)
        return self.fit_result

    def plan(self, n_records: int, budget: Budget, spec: TableSpec | None = None) -> Plan:
        return dpsgd.plan(self, n_records, self.config.batch_size, self.config.epochs, budget,
                          spec, MECHANISM)

    # -- sampling, the diagnostic, the likelihood ----------------------------------------------
    @torch.no_grad()
    def _images(self, labels: torch.Tensor, gen: torch.Generator) -> np.ndarray:
        """[len(labels), H, W, C] uint8: z ~ N(0, I), the decoder's mean image E[x|z, y]
        (Bernoulli probabilities as intensities; drawing each pixel would add salt noise)."""
        was = self.vae.training
        self.vae.eval()
        out = []
        for part in labels.split(512):
            z = torch.randn(len(part), self.config.latent_dim, generator=gen)
            mean = torch.sigmoid(self.vae.decoder(z, part if self.layout.classes else None))
            out.append(im.to_uint8(mean))
        self.vae.train(was)
        return np.concatenate(out) if out else np.zeros((0, *self.layout.shape), np.uint8)

    @torch.no_grad()
    def log_prob(self, rows: pd.DataFrame) -> np.ndarray:
        """[len(rows)] the ELBO of each image given its label (nats), a LOWER BOUND on
        log p(x|y) under the Bernoulli likelihood over intensities in [0, 1], estimated with
        ``elbo_samples`` draws of z (fixed seed: the same rows give the same figures).
        ValueError as ``image_modules.encode``."""
        x, y = im.encode(rows, self.spec)
        self.vae.eval()
        gen = torch.Generator().manual_seed(0)
        total = torch.zeros(len(x))
        for _ in range(self.config.elbo_samples):
            eps = torch.randn(len(x), self.config.latent_dim, generator=gen)
            total += negative_elbo(*self.vae(x, y, eps), x)
        return (-total / self.config.elbo_samples).numpy().astype(float)

    def _save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.vae.state_dict().items()},
                  directory / WEIGHTS)

    def _load(self, directory: Path) -> None:
        from safetensors.torch import load_file

        self._build(self.spec)
        self.vae.load_state_dict(load_file(directory / WEIGHTS))
        self.vae.eval()
