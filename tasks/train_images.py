"""The train stage for the image families (issue 14: ``dcgan``, ``convvae``): the held-out
split, the table spec (one ``image`` field of the validated shape, the declared labels), the
privacy plan checked before any work, and ``fit`` with its per-epoch grids as MLflow artifacts.

The families are ``models.base`` generators; this stage never asks which one it holds.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from models import base
from models import images as imgs
from tasks import tracking
from tasks.dpsgd import resolve_delta
from tasks.errors import PrivacyError
from tasks.images import load_canonical, write_canonical
from tasks.train_config import PrivacyConfig
from tasks.train_family import Stage

log = logging.getLogger(__name__)


class ImageTrainConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # convvae: a likelihood (ELBO) for the audit and stable training at small ε; dcgan: the
    # textbook's adversarial pair, sharper samples when the budget allows.
    family: Literal["dcgan", "convvae"] = "convvae"
    # Each family's own settings (epochs, batch size, learning rate, grid_every...), checked by
    # its config class.
    dcgan: dict[str, Any] = Field(default_factory=dict)
    convvae: dict[str, Any] = Field(default_factory=dict)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    # Held out before training, never seen by it: the evaluation's test set and the audit's
    # non-members.
    holdout_fraction: float = Field(default=0.2, gt=0.0, lt=0.5)

    def section(self, family: str) -> dict[str, Any]:
        return getattr(self, family)


def image_spec(shape: list[int] | tuple[int, ...], labels: tuple[str, ...] | None
               ) -> base.TableSpec:
    """One image field of ``shape`` (H, W, C) and, when the data is labelled, the label as a
    categorical field over the declared (public) values."""
    fields = [base.FieldSpec(name=imgs.IMAGE, kind="image", shape=tuple(int(s) for s in shape))]
    if labels is not None:
        fields.append(base.FieldSpec(name=imgs.LABEL, kind="categorical", values=tuple(labels)))
    return base.TableSpec(tuple(fields))


def split(canonical: str, fraction: float, seed: int, out: Path) -> dict[str, str]:
    """The canonical NPZ split at random (``seed``) into train.npz and holdout.npz in ``out``."""
    with np.load(canonical, allow_pickle=False) as data:
        images, ids = data["images"], data["ids"]
        labels = data.get("labels")
    order = np.random.default_rng(seed).permutation(len(images))
    cut = max(1, round(len(images) * fraction))
    paths = {}
    for name, idx in (("holdout", np.sort(order[:cut])), ("train", np.sort(order[cut:]))):
        paths[name] = str(write_canonical(out / f"{name}.npz", images[idx], list(ids[idx]),
                                          None if labels is None else list(labels[idx])))
    return paths


def budget_for(cfg: ImageTrainConfig, n: int) -> base.Budget:
    p = cfg.privacy
    return base.Budget(enabled=p.enabled, epsilon=p.target_epsilon, delta=resolve_delta(p, n),
                       accountant=p.accountant, max_grad_norm=p.max_grad_norm,
                       secure_mode=p.secure_mode)


def plan(cfg: ImageTrainConfig, n: int, spec: base.TableSpec) -> base.Plan:
    """The family's privacy plan for ``n`` training images, refused (PrivacyError naming the
    setting) when its ε overshoots the target or the ceiling."""
    p = cfg.privacy
    gen = base.create(cfg.family, cfg.section(cfg.family))
    try:
        planned = gen.plan(n, budget_for(cfg, n), spec)
    except ValueError as exc:
        raise PrivacyError(f"train.{cfg.family}: {exc}") from None
    if p.enabled and planned.epsilon > min(p.target_epsilon, p.epsilon_ceiling) * 1.0001:
        raise PrivacyError(f"the {cfg.family} plan spends ε {planned.epsilon:.3f}, above "
                           f"train.privacy.target_epsilon={p.target_epsilon} or epsilon_ceiling"
                           f"={p.epsilon_ceiling}; lower the epochs or raise the batch size")
    return planned


def train(cfg: ImageTrainConfig, train_path: str, labels: tuple[str, ...] | None, seed: int,
          out: Path, stage: Stage) -> dict:
    """Fit the family on the images of ``train_path`` and save it to ``out``/model; the
    register stage's train result (ε, δ, σ, q, steps, family...). Grids go to MLflow as
    ``grids/epoch_XXX.png`` as the family reports them."""
    df = load_canonical(train_path)
    spec = image_spec(imgs.to_array(df).shape[1:], labels if imgs.LABEL in df else None)
    budget = budget_for(cfg, len(df))
    gen = base.create(cfg.family, cfg.section(cfg.family))
    stage.log_params({"train.records": len(df), "train.family": cfg.family,
                      **{f"{cfg.family}.{k}": v for k, v in gen.config_dict().items()}})
    total = int(getattr(gen.config, "epochs", 0) or 0)
    grids = out / "grids"
    grids.mkdir(parents=True, exist_ok=True)
    last: dict = {}

    def on_progress(m: dict) -> None:
        last.update(m)
        png = m.get("grid_png")
        if png:
            path = grids / f"epoch_{int(m.get('epoch', 0)):03d}.png"
            path.write_bytes(png)
            tracking.log_artifact(stage.run_id, path, stage.prefix + "grids")
        stage.progress({k: v for k, v in m.items() if k != "grid_png"}, total)

    fit = gen.fit(df[spec.names].reset_index(drop=True), spec, budget, seed=seed,
                  on_progress=on_progress)
    model_dir = gen.save(out / "model")
    if fit.private:
        stage.log_metrics({"privacy.epsilon_spent": fit.epsilon, "privacy.delta": fit.delta})
    if last.get("mode_collapse"):
        stage.logger.warning(
            "mode collapse at the last epoch: diversity.min %.3f below %s.collapse_threshold "
            "%g (the generator draws near-copies of one picture per label); more epochs or a "
            "larger ε, or look at the grids", last.get("diversity.min", math.nan), cfg.family,
            getattr(gen.config, "collapse_threshold", math.nan))
    sgd = next((e for e in fit.events if e.get("kind") == "gaussian" and e.get("q", 1) < 1),
               None)
    return {"model_dir": str(model_dir), "family": cfg.family,
            "family_reason": "set in train.family", "epsilon": fit.epsilon,
            "delta": budget.delta, "accountant": fit.accountant if fit.private else "none",
            "private": fit.private, "mechanism": fit.mechanism,
            "noise_multiplier": sgd["sigma"] if sgd else 0.0,
            "sample_rate": sgd["q"] if sgd else 1.0, "steps": sgd["steps"] if sgd else 0,
            "epochs": total, "final_loss": fit.final_loss, "seconds": fit.seconds,
            "epsilon_pld": fit.epsilon_check, "events": list(fit.events),
            "params": dict(fit.params), "family_config": gen.config_dict()}


@task(name="preflight-images", cache_policy=NO_CACHE)
def preflight_task(cfg: ImageTrainConfig, train_path: str, shape: list[int],
                   labels: tuple[str, ...] | None, run_id: str) -> dict:
    """The family's plan, checked and logged before any training."""
    with np.load(train_path, allow_pickle=False) as data:
        n, labelled = len(data["images"]), "labels" in data
    planned = plan(cfg, n, image_spec(shape, labels if labelled else None))
    summary = (f"{cfg.family} on {n} images: ε {planned.epsilon:.3f} at δ {planned.delta:.2g} "
               f"({planned.mechanism})" if cfg.privacy.enabled else
               f"{cfg.family} on {n} images, not private")
    tracking.log_params(run_id, {f"preflight.{k}": v for k, v in planned.params.items()
                                 if isinstance(v, int | float | str)})
    if cfg.privacy.enabled and math.isfinite(planned.epsilon):
        tracking.log_metrics(run_id, {"preflight.epsilon": planned.epsilon})
    get_run_logger().info("plan: %s", summary)
    return {"summary": summary, "plan": planned.to_dict()}


@task(name="train-images", cache_policy=NO_CACHE)
def train_task(cfg: ImageTrainConfig, train_path: str, labels: tuple[str, ...] | None,
               seed: int, out: str, run_id: str, prefix: str = "") -> dict:
    stage = Stage(run_id, prefix, get_run_logger())
    return train(cfg, train_path, labels, seed, Path(out), stage)


def sample_grid(model_dir: str, n: int, seed: int) -> bytes:
    """A grid PNG of ``n`` images drawn from the saved model (one row per class if labelled)."""
    gen = base.load(model_dir)
    df = gen.sample(n, seed)
    return imgs.grid_png(imgs.to_array(df), list(df[imgs.LABEL]) if imgs.LABEL in df else None)


def log_png(run_id: str, png: bytes, artifact_file: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        path.write_bytes(png)
        tracking.log_artifact(run_id, path, str(Path(artifact_file).parent))
