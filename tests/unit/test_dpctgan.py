"""DP-CTGAN: only the discriminator takes DP-SGD steps on real rows, the mode-collapse diagnostic
flags a collapsed generator, and only spec values come out."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from models import base, dpsgd
from models.base import Budget, FieldSpec, TableSpec
from models.ctgan_modules import discriminator
from models.dpctgan import DPCTGAN, DPCTGANConfig, mode_collapse_figure

SPEC = TableSpec((
    FieldSpec("plan", "categorical", values=("basic", "plus", "pro", "max")),
    FieldSpec("city", "categorical", values=("Oslo", "Lima"), nullable=True),
    FieldSpec("age", "numeric", low=18, high=90, integer=True),
    FieldSpec("spend", "numeric", low=0.0, high=500.0, nullable=True),
))
TINY = DPCTGANConfig(noise_dim=8, generator_dims=(16,), discriminator_dims=(16,), modes=4,
                     batch_size=32, epochs=2, coverage_rows=300)


def table(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    spend = rng.uniform(0, 500, n)
    spend[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame({
        "plan": rng.choice(["basic", "plus", "pro", "max"], n, p=[0.5, 0.3, 0.15, 0.05]),
        "city": [None if r < 0.2 else c for r, c in
                 zip(rng.random(n), rng.choice(["Oslo", "Lima"], n), strict=True)],
        "age": rng.integers(18, 91, n), "spend": spend})


def built(budget: Budget, batch: int = 4):
    """A DPCTGAN ready for steps, as ``fit`` sets it up, and its private discriminator."""
    m = DPCTGAN(TINY)
    m.spec = SPEC
    m._build(SPEC)
    data = torch.from_numpy(m.transformer.encode(table()))
    gen = torch.Generator().manual_seed(0)
    events = m._paid_frequencies(data, budget, gen)
    disc = discriminator(m.transformer.width + m.cond_width, TINY.discriminator_dims)
    dp = dpsgd.privatize(disc, torch.optim.SGD(disc.parameters(), lr=0.1), len(data), batch,
                         1, budget, gen, prior=events)
    return m, data, disc, dp, gen, events


def test_discriminator_step_clips_per_record_and_the_generator_step_is_not_private():
    c = 1e-3
    m, data, disc, dp, gen, events = built(Budget(max_grad_norm=c, accountant="rdp"))
    assert events and events[0]["q"] == 1.0  # the paid category counts
    dp.optimizer.step = lambda: None  # look at the gradients before Opacus consumes them
    m._discriminator_step(dp, data[:4], gen)
    params = list(disc.parameters())
    # two passes (real, fake) summed into one per-record gradient: batch dim 4, not 8
    assert all(p.grad_sample.shape == (4, *p.shape) for p in params)
    norms = torch.stack([p.grad_sample.flatten(1).norm(dim=1) for p in params]).norm(dim=0)
    assert (norms > c).all()
    before = [p.grad_sample.clone() for p in params]
    opt_g = torch.optim.Adam(m.generator.parameters())
    m._generator_step(dp.module, opt_g, 4, gen)
    assert all(not hasattr(p, "grad_sample") for p in m.generator.parameters())
    assert all(p.grad is not None for p in m.generator.parameters())
    # the generator step left the discriminator's per-sample gradients alone
    assert all(torch.equal(p.grad_sample, b) for p, b in zip(params, before, strict=True))
    dp.optimizer.clip_and_accumulate()
    assert torch.stack([p.summed_grad.norm() for p in params]).norm() <= 4 * c * 1.0001
    assert dp.optimizer.params == params  # Opacus noises the discriminator only


def test_no_batchnorm_in_the_private_discriminator():
    from opacus.validators import ModuleValidator

    disc = discriminator(30, (64, 64))
    assert not any(isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in disc.modules())
    assert ModuleValidator.validate(disc, strict=False) == []


def test_mode_collapse_is_flagged_only_when_the_generator_collapses():
    m, *_ = built(Budget(enabled=False))
    healthy = m.mode_coverage()
    assert healthy["mode_coverage.plan"] == 1.0 and healthy["mode_collapse"] == 0.0
    b = m.transformer.block("plan", "value")
    with torch.no_grad():  # every plan logit but "pro" pushed far down: one category left
        m.generator.out.bias[b.start:b.stop] = torch.tensor([-50.0, -50.0, 50.0, -50.0])
    collapsed = m.mode_coverage()
    assert collapsed["mode_coverage.plan"] == 0.25 == collapsed["mode_coverage.min"]
    assert collapsed["mode_collapse"] == 1.0
    fig = mode_collapse_figure([{"epoch": 1, **healthy}, {"epoch": 2, **collapsed}])
    assert len(fig.axes[0].lines) == 4  # plan, city, min, the threshold line


def test_fit_reports_per_epoch_gan_losses_coverage_and_composed_epsilon():
    seen = []
    m = DPCTGAN(TINY)
    r = m.fit(table(), SPEC, Budget(epsilon=6.0, delta=1e-4, accountant="rdp"), seed=0,
              on_progress=seen.append)
    assert [s["epoch"] for s in seen] == [1, 2]
    assert all(math.isfinite(s["d_loss"]) and math.isfinite(s["g_loss"]) for s in seen)
    assert seen[0]["epsilon"] < seen[1]["epsilon"] == pytest.approx(r.epsilon)
    assert {"mode_coverage.plan", "mode_coverage.city", "mode_coverage.min"} <= set(seen[0])
    assert [e["q"] for e in r.events] == [1.0, pytest.approx(32 / 120, rel=0.2)]
    assert r.epsilon <= 6.0 * 1.001 and r.epsilon_check <= r.epsilon * 1.001


def test_conditional_vector_is_learned():
    """Non-private, a few epochs: asking for the "pro" plan through the conditional vector gives
    it far more often than its 15 % share (about 30 % untrained; the condition loss at work)."""
    m = DPCTGAN(TINY.model_copy(update={"epochs": 8, "generator_lr": 1e-2}))
    m.fit(table(), SPEC, Budget(enabled=False), seed=0)
    rows = m._generate(300, torch.Generator().manual_seed(1), fixed=(0, 2))
    assert np.mean([r["plan"] == "pro" for r in rows]) > 0.6


@pytest.fixture(scope="module")
def fitted():
    m = DPCTGAN(TINY)
    m.fit(table(), SPEC, Budget(enabled=False), seed=1)
    return m


def test_only_spec_values_come_out(fitted):
    s = fitted.sample(300, seed=3)
    assert set(s["plan"]) <= {"basic", "plus", "pro", "max"} and s["plan"].notna().all()
    assert set(s["city"].dropna()) <= {"Oslo", "Lima"}
    assert s["age"].between(18, 90).all() and (s["age"] == s["age"].round()).all()
    assert s["spend"].dropna().between(0, 500).all()


def test_save_load_gives_the_same_samples_and_conditions_hold(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    loaded = base.load(tmp_path / "m")
    assert type(loaded) is DPCTGAN and not loaded.has_log_prob
    pd.testing.assert_frame_equal(fitted.sample(50, seed=9), loaded.sample(50, seed=9))
    s = loaded.sample(40, seed=2, conditions={"plan": "max", "city": "Oslo"})
    assert len(s) == 40 and (s["plan"] == "max").all() and (s["city"] == "Oslo").all()


def test_the_discriminator_loss_falls_in_a_few_cpu_steps():
    """Loss falls: against the same real rows and the same fakes (the generator held fixed,
    its noise reseeded), a few of fit's discriminator steps, without DP, lower the
    discriminator's loss (a GAN is a game, so it is each player's loss against a fixed
    opponent that must fall)."""
    m, data, _, dp, _, _ = built(Budget(enabled=False), batch=32)
    losses = [m._discriminator_step(dp, data[:32], torch.Generator().manual_seed(1))
              for _ in range(20)]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.1
