"""The image families (issue 14): losses fall, DP-SGD takes per-image gradients of the private
networks only, no BatchNorm under Opacus, saved models draw the same images, labels as asked."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models import base, dpsgd
from models import image_modules as im
from models.base import Budget, FieldSpec, TableSpec
from models.convvae import Autoencoder, ConvVAE, ConvVAEConfig, negative_elbo
from models.dcgan import DCGAN, DCGANConfig, Discriminator
from models.images import from_png, to_frame

LABELS = ("0", "1", "2")
SPEC = TableSpec((FieldSpec("image", "image", shape=(8, 8, 1)),
                  FieldSpec("label", "categorical", values=LABELS)))
GAN = DCGANConfig(noise_dim=4, generator_width=4, discriminator_width=4, batch_size=16,
                  epochs=2, grid_every=2, coverage_rows=6)
VAE = ConvVAEConfig(latent_dim=2, width=4, batch_size=16, epochs=2, grid_every=2,
                    coverage_rows=6, elbo_samples=2)


def images(n: int = 48, seed: int = 0):
    """``n`` 8×8 grey images: label k is a bright bar in row 2k+1, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    x = rng.integers(0, 40, (n, 8, 8, 1))
    for i, k in enumerate(labels):
        x[i, 2 * k + 1] = 230
    return to_frame(x.astype(np.uint8), labels)


def fitted(family: str, budget: Budget | None = None, **update):
    cfg = (GAN if family == "dcgan" else VAE).model_copy(update=update)
    m = base.create(family, cfg.model_dump())
    seen: list[dict] = []
    m.fit(images(), SPEC, budget or Budget(enabled=False), seed=0, on_progress=seen.append)
    return m, seen


def test_convvae_loss_falls_in_a_few_cpu_steps():
    _, seen = fitted("convvae", epochs=6, lr=1e-2)
    losses = [s["loss"] for s in seen]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 1.0
    assert seen[0]["loss"] == pytest.approx(seen[0]["reconstruction"] + seen[0]["kl"])


def test_dcgan_each_players_loss_falls_against_the_other_held_fixed():
    m = DCGAN(GAN)
    m.spec = SPEC
    m._build(SPEC)
    x, y = im.encode(images(16), SPEC)
    gen = torch.Generator().manual_seed(0)
    dp = dpsgd.privatize(m.discriminator, torch.optim.Adam(m.discriminator.parameters(), 1e-2),
                         16, 16, 1, Budget(enabled=False), gen)
    d_losses = [m._discriminator_step(dp, x * 2 - 1, y, torch.Generator().manual_seed(1))
                for _ in range(15)]  # the same fakes each step
    assert d_losses[-1] < d_losses[0] - 0.2
    opt_g = torch.optim.Adam(m.generator.parameters(), 1e-2)
    g_losses = [m._generator_step(m.discriminator, opt_g, 16, torch.Generator().manual_seed(1))
                for _ in range(15)]
    assert g_losses[-1] < g_losses[0] - 0.2


def _private(module, budget=None):
    return dpsgd.privatize(module, torch.optim.SGD(module.parameters(), lr=0.1), 48, 16, 1,
                           budget or Budget(max_grad_norm=1e-3, accountant="rdp"),
                           torch.Generator().manual_seed(0))


def test_one_dp_step_gives_per_image_gradients_of_the_discriminator_only():
    m = DCGAN(GAN)
    m.spec = SPEC
    m._build(SPEC)
    dp = _private(m.discriminator)
    dp.optimizer.step = lambda: None  # look at the gradients before Opacus consumes them
    x, y = im.encode(images(4), SPEC)
    m._discriminator_step(dp, x * 2 - 1, y, torch.Generator().manual_seed(0))
    params = list(m.discriminator.parameters())
    # (real_i, fake_i) summed into one per-image gradient: batch dim 4, not 8
    assert all(p.grad_sample.shape == (4, *p.shape) for p in params)
    assert all(not hasattr(p, "grad_sample") for p in m.generator.parameters())
    assert dp.optimizer.params == params  # Opacus noises the discriminator only


def test_one_dp_step_gives_per_image_gradients_of_the_whole_vae():
    lay = im.layout(SPEC)
    vae = Autoencoder(lay, VAE)
    dp = _private(vae)
    x, y = im.encode(images(4), SPEC)
    negative_elbo(*dp.module(x, y, torch.zeros(4, VAE.latent_dim)), x).mean().backward()
    params = list(vae.parameters())  # transposed convolutions included (functorch)
    assert all(p.grad_sample.shape == (4, *p.shape) for p in params)
    norms = torch.stack([p.grad_sample.flatten(1).norm(dim=1) for p in params]).norm(dim=0)
    assert (norms > 1e-3).all()  # so clipping has work to do
    dp.optimizer.clip_and_accumulate()
    assert torch.stack([p.summed_grad.norm() for p in params]).norm() <= 4e-3 * 1.0001


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
def test_no_batchnorm_where_opacus_wraps_and_every_shape_comes_out_whole(shape):
    from opacus.validators import ModuleValidator

    spec = TableSpec((FieldSpec("image", "image", shape=shape), SPEC.fields[1]))
    lay = im.layout(spec)
    for private in (Discriminator(lay, 4), Autoencoder(lay, VAE)):
        assert not any(isinstance(x, torch.nn.modules.batchnorm._BatchNorm)
                       for x in private.modules())
        assert ModuleValidator.validate(private, strict=False) == []
    h, w, c = shape
    out = im.Upsampler(lay, 3, 4, "batch")(torch.randn(2, 3), torch.tensor([0, 2]))
    assert out.shape == (2, c, h, w)
    assert Discriminator(lay, 4)(out, torch.tensor([0, 2])).shape == (2,)
    logits, mu, _ = Autoencoder(lay, VAE)(torch.rand(2, c, h, w), torch.tensor([0, 2]),
                                          torch.zeros(2, VAE.latent_dim))
    assert logits.shape == (2, c, h, w) and mu.shape == (2, VAE.latent_dim)


def test_private_fit_reports_epsilon_within_the_target_and_grids():
    m, seen = fitted("dcgan", Budget(epsilon=4.0, delta=1e-4, accountant="rdp"))
    assert [s["epoch"] for s in seen] == [1, 2]
    assert seen[0]["epsilon"] < seen[1]["epsilon"] == pytest.approx(m.fit_result.epsilon)
    assert m.fit_result.epsilon <= 4.0 * 1.001 and m.fit_result.private
    assert "grid_png" not in seen[0] and from_png(seen[1]["grid_png"]).ndim == 3
    assert {"d_loss", "g_loss", "diversity.min", "mode_collapse"} <= set(seen[0])
    plan = m.plan(48, Budget(epsilon=4.0, delta=1e-4, accountant="rdp"), SPEC)
    assert plan.events == m.fit_result.events and plan.dpsgd


@pytest.mark.parametrize("family", ["dcgan", "convvae"])
def test_saved_model_draws_the_same_uint8_images_with_the_labels_asked(family, tmp_path):
    m, _ = fitted(family, epochs=1)
    loaded = base.load(m.save(tmp_path / family))
    a, b = m.sample(5, seed=3), loaded.sample(5, seed=3)
    assert list(a.columns) == ["image", "label"] and a["label"].isin(LABELS).all()
    for x, z in zip(a["image"], b["image"], strict=True):
        assert x.dtype == np.uint8 and x.shape == (8, 8, 1) and np.array_equal(x, z)
    assert list(a["label"]) == list(b["label"])
    only = loaded.sample(4, seed=1, conditions={"label": "2"})
    assert list(only["label"]) == ["2"] * 4
    with pytest.raises(ValueError, match="not among the declared"):
        loaded.sample(2, seed=1, conditions={"label": "7"})
    scores = loaded.log_prob(images(6)) if family == "convvae" \
        else loaded.discriminator_score(images(6))
    assert scores.shape == (6,) and np.isfinite(scores).all()


@pytest.mark.parametrize("family", ["dcgan", "convvae"])
def test_without_a_label_column_the_families_draw_images_alone(family):
    spec = TableSpec(SPEC.fields[:1])
    cfg = (GAN if family == "dcgan" else VAE).model_copy(update={"epochs": 1})
    m = base.create(family, cfg.model_dump())
    m.fit(images()[["image"]], spec, Budget(enabled=False), seed=0)
    out = m.sample(3, seed=0)
    assert list(out.columns) == ["image"] and out["image"][0].shape == (8, 8, 1)
    with pytest.raises(ValueError, match="conditions only on its label"):
        m.sample(1, seed=0, conditions={"label": "1"})


def test_an_undeclared_label_is_refused_naming_the_row():
    df = images(6)
    df.loc[4, "label"] = "9"
    with pytest.raises(ValueError, match=r"row 4 has label '9'.*declare every label"):
        ConvVAE(VAE).fit(df, SPEC, Budget(enabled=False), seed=0)


def test_mode_collapse_is_flagged_when_a_label_comes_out_as_one_picture():
    lay = im.layout(SPEC)
    df = images(30)
    x, y = np.stack(df["image"]), np.array([LABELS.index(v) for v in df["label"]])
    healthy = im.diversity(x, y, lay, 0.02)
    assert healthy["mode_collapse"] == 0.0 and healthy["diversity.min"] > 0.02
    x[y == 1] = x[y == 1][0]  # every "1" the same picture
    collapsed = im.diversity(x, y, lay, 0.02)
    assert collapsed["diversity.1"] < 1e-6 and collapsed["diversity.min"] < 1e-6
    assert collapsed["mode_collapse"] == 1.0 and collapsed["diversity.0"] > 0.02
    m = DCGAN(GAN)
    m.spec = SPEC
    m._build(SPEC)
    with torch.no_grad():  # the last layer ignores its input: one picture for every noise
        m.generator.body[-1].weight.zero_()
    assert m.mode_coverage()["mode_collapse"] == 1.0
