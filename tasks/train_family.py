"""The train stage for a generator family behind ``models.base`` (aim, mst, tvae, dpctgan,
dplstm, hybrid): the table spec from the released contract, a ``Budget`` that composes the
domain stage's Gaussian releases as prior events, ``fit``, and the model folder (the family's
files, ``family.json``, ``release.json``)."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from prefect.artifacts import create_markdown_artifact

from models import accounting, base
from tasks import composition, distributed, release, tracking
from tasks.contract import DataContract
from tasks.dpsgd import resolve_delta
from tasks.errors import PrivacyError
from tasks.spec import table_spec

if TYPE_CHECKING:
    from tasks.train_config import TrainConfig

# Progress events for a watching CLI; not run logs, so Prefect's API never receives them.
progress = logging.getLogger("privgen.progress")


@dataclass
class Stage:
    """What a family's training reports through: the run, the key prefix, the logger."""

    run_id: str
    prefix: str
    logger: Any

    def log_params(self, params: dict) -> None:
        tracking.log_params(self.run_id, {self.prefix + k: v for k, v in params.items()})

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        tracking.log_metrics(self.run_id, {self.prefix + k: v for k, v in metrics.items()},
                             step=step)

    def progress(self, m: dict, total: int) -> None:
        """One epoch's (or round's) figures: ``epoch``/``round``, ``loss``, ``epsilon``...;
        ``part`` names a hybrid's table or text part. ``total`` 0: not known ahead."""
        step = int(m.get("epoch", m.get("round", 0)))
        metrics = {f"train.{k}": float(v) for k, v in m.items() if k not in (
            "epoch", "round", "epsilon", "steps") and isinstance(v, int | float)
            and math.isfinite(v)}
        if math.isfinite(m.get("epsilon", math.inf)):
            metrics["privacy.epsilon"] = m["epsilon"]
        self.log_metrics(metrics, step=step)
        unit = "epoch" if "epoch" in m else "round"
        part = f"{m['part']} part " if m.get("part") else ""
        self.logger.info(self.prefix + "%s%s %s: %s", part, unit,
                         f"{step}/{total}" if total else str(step),
                         ", ".join(f"{k} {v:.3g}" for k, v in metrics.items()))
        stage = self.prefix + "train" + (f" {m['part']}" if m.get("part") else "")
        progress.info("epoch", extra={"stage": stage,
                                      "progress": (step, total or None, unit + "s")})


def budget_for(cfg: TrainConfig, n: int, spend: composition.DomainSpend) -> base.Budget:
    """The family's budget: the run's ε target, its δ less what thresholding observed
    categories took (``composition._remaining``), the domain releases as prior events."""
    p = cfg.privacy
    delta = resolve_delta(p, n)
    if p.enabled and spend.delta and not delta > spend.delta:
        raise PrivacyError(f"δ {delta:.3g} does not cover the {spend.delta:.3g} that "
                           "thresholding observed categories takes; raise train.privacy."
                           "target_delta or lower train.privacy.domain_share")
    prior = (accounting.gaussian(spend.noise_multiplier, 1.0, spend.releases),) \
        if spend.releases and p.enabled else ()
    return base.Budget(enabled=p.enabled, epsilon=p.target_epsilon,
                       delta=delta - spend.delta if p.enabled else delta, prior=prior,
                       accountant=p.accountant, max_grad_norm=p.max_grad_norm,
                       secure_mode=p.secure_mode)


def train_family(stage: Stage, family: str, train_df: pd.DataFrame, released: DataContract,
                 cfg: TrainConfig, seed: int, out: Path, domain: dict | None) -> dict:
    """Fit ``family`` on ``train_df`` and save it to ``out / "model"``; the train stage's
    result keys that depend on the model (``tasks.train``)."""
    spec = table_spec(released, train_df.columns)
    spend = composition.DomainSpend.from_dict((domain or {}).get("spend"))
    budget = budget_for(cfg, len(train_df), spend)
    gen = base.create(family, cfg.section(family))
    processes = cfg.distributed.world_size if distributed.check(
        family, cfg.distributed, budget.enabled) else 1
    stage.log_params({"train.records": len(train_df), "train.world_size": processes,
                      **{f"{family}.{k}": v for k, v in _config(gen).items()}})
    table, on_progress = train_df[spec.names].reset_index(drop=True), \
        lambda m: stage.progress(m, _total(gen, m))
    if processes > 1:  # rank 0 saves the model; its fit result comes back with it
        stage.logger.info("training %s in %d processes (torchrun, %s backend; one DP-SGD "
                          "accountant over the global batch)", family, processes,
                          distributed.backend(cfg.distributed))
        gen = distributed.fit(family, cfg.section(family), table, spec, budget, seed,
                              out / "model", cfg.distributed, on_progress)
        fit = gen.fit_result
    else:
        fit = gen.fit(table, spec, budget, seed=seed, on_progress=on_progress)
    model_dir = gen.save(out / "model")
    release.write(released, spec.names, model_dir)
    # The family's own mechanism alone, at the δ left after thresholding.
    own = accounting.epsilon(fit.events, budget.delta, budget.accountant) if fit.private \
        else math.inf
    params = dict(fit.params)
    # The run's δ: the family spent what thresholding observed categories left of it.
    run_delta = budget.delta + (spend.delta if fit.private else 0.0)
    # The accountant that composed ε: Rényi DP where a zCDP event is among them.
    accountant = accounting.used([*budget.prior, *fit.events], fit.accountant) \
        if fit.private else "none"
    stage.log_params({f"mechanism.{k}": v for k, v in _flat(params).items()})
    if fit.private:
        stage.log_metrics({"privacy.epsilon_spent": fit.epsilon, "privacy.delta": run_delta,
                           **({"privacy.epsilon_pld": fit.epsilon_check}
                              if fit.epsilon_check is not None else {})})
        if fit.epsilon_check is not None and fit.epsilon_check > 1.05 * fit.epsilon:
            stage.logger.warning("ε %.3f (%s) is more than 5 %% below the check accountant's "
                                 "%.3f", fit.epsilon, accountant, fit.epsilon_check)
    sgd = next((e for e in fit.events if e["kind"] == "gaussian" and e["q"] < 1), None)
    create_markdown_artifact(key=f"{stage.prefix.replace('.', '-')}train-report", markdown=(
        f"# Training{f' ({stage.prefix[:-1]})' if stage.prefix else ''}\n\n"
        f"- family: {family} ({fit.mechanism})\n- records: {len(train_df)}\n"
        f"- private: {fit.private}\n- ε: {fit.epsilon:.3f} (target "
        f"{cfg.privacy.target_epsilon}), δ: {run_delta:.2e}, accountant: {accountant}\n"
        f"- time: {fit.seconds:.0f} s\n"))
    return {"model_dir": str(model_dir), "epsilon": fit.epsilon,
            "delta": run_delta,
            "noise_multiplier": sgd["sigma"] if sgd else float(params.get("sigma", 0.0) or 0.0),
            "sample_rate": sgd["q"] if sgd else 1.0,
            "steps": sgd["steps"] if sgd else int(params.get("rounds", 0) or 0),
            "epochs": _epochs(gen),
            "accountant": accountant, "private": fit.private,
            "final_loss": fit.final_loss, "seconds": fit.seconds,
            "epsilon_pld": fit.epsilon_check, "epsilon_sgd": own,
            "domain_spend": asdict(spend), "mechanism": fit.mechanism,
            "events": list(fit.events), "params": params}


def _epochs(gen: base.Generator) -> int:
    """Epochs of the family's training, or of a hybrid's text part (its table part runs
    rounds); 0 for a family without epochs."""
    epochs = getattr(gen.config, "epochs", 0) or getattr(
        getattr(getattr(gen, "text", None), "config", None), "epochs", 0)
    return int(epochs or 0)


def _config(gen: base.Generator) -> dict:
    cfg = gen.config
    return cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else dict(cfg or {})


def _total(gen: base.Generator, m: dict) -> int:
    """Epochs the family, or the hybrid part ``m`` reports on, will run; 0 for rounds, whose
    number is not fixed ahead (AIM anneals under a cap, MST measures once)."""
    part = getattr(gen, m["part"], None) if m.get("part") else None
    return int(getattr(getattr(part or gen, "config", None), "epochs", 0) or 0) \
        if "epoch" in m else 0


def _flat(params: dict, prefix: str = "") -> dict:
    """Scalars of ``params`` as MLflow params (lists and long texts shortened)."""
    out = {}
    for k, v in params.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, list | tuple):
            out[f"{prefix}{k}"] = str(v)[:500]
        else:
            out[f"{prefix}{k}"] = v
    return out
