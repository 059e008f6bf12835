"""Preflight: what a training plan will cost in privacy, and whether it can run, before any work.

Computes σ, steps and sample rate the way training will, checks the model with Opacus' validator
and a two-step dry run on random bytes, and refuses plans above the ε ceiling in one line.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pandas as pd
import torch
from opacus.accountants.utils import get_noise_multiplier
from opacus.validators import ModuleValidator
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from models.tokenizer import Tokenizer
from tasks import composition, tracking
from tasks.errors import ConfigError, PrivacyError
from tasks.train import (
    TrainConfig,
    build_model,
    load_tokenizer,
    resolve_delta,
    split_holdout,
    train,
)

DRY_RUN_STEPS = 2
# Held-out records the evaluation needs: its detection test cross-validates in 5 folds, and the
# held-out perplexity and the membership test's non-members come from the same records.
MIN_HELD_OUT = 5
# Training records the evaluation's train-on-real baseline and membership test need.
MIN_TRAIN = 10


def check_table_size(rows: int, train_records: int, held_out: int, fraction: float) -> None:
    """Refuse, before any privacy budget is spent, a table too small for the stages after
    training (issue 12: a 30-row table spent ε = 8, then evaluation failed and no model was
    kept). Raises ConfigError: how many rows each stage needs, and what to set."""
    if held_out >= MIN_HELD_OUT and train_records >= MIN_TRAIN:
        return
    # The split is random per row: ask for enough rows that it holds out MIN_HELD_OUT with
    # room to spare, not just on average.
    needed = max(math.ceil(2 * MIN_HELD_OUT / fraction), math.ceil(1.5 * MIN_TRAIN
                                                                    / (1 - fraction)))
    if held_out < MIN_HELD_OUT:
        wider = next((f for f in (0.2, 0.3, 0.4) if f > fraction
                      and f * rows >= 2 * MIN_HELD_OUT and (1 - f) * rows >= MIN_TRAIN), None)
        raise ConfigError(
            f"preflight: {rows} anonymized rows leave {held_out} held-out records at "
            f"train.holdout_fraction={fraction:g}; evaluation needs at least {MIN_HELD_OUT} "
            f"(detection's 5 folds, held-out perplexity, membership test): supply at least "
            f"{needed} rows" + (f" or set train.holdout_fraction={wider:g}" if wider else "")
            + "; no privacy budget was spent")
    raise ConfigError(
        f"preflight: {rows} anonymized rows leave {train_records} training records; training "
        f"and evaluation need at least {MIN_TRAIN} (the train-on-real baseline and membership "
        f"test): supply at least {needed} rows; no privacy budget was spent")


@dataclass(frozen=True)
class PreflightReport:
    records: int
    sample_rate: float
    steps: int
    noise_multiplier: float
    epsilon: float
    delta: float
    accountant: str
    dry_run_seconds: float
    domain_releases: int = 0  # Gaussian histograms that estimated the released domains


def plan_sampling(n_records: int, cfg: TrainConfig) -> tuple[float, int]:
    """(sample rate, expected steps) exactly as ``train`` sets them: Opacus' Poisson loader
    samples at 1 / (batches per epoch) and the accountant counts that many steps per epoch."""
    batches = math.ceil(n_records / cfg.batch_size)
    return 1.0 / batches, batches * cfg.epochs


def preflight(n_records: int, cfg: TrainConfig, tokenizer: Tokenizer,
              seed: int = 0, domain: dict | None = None) -> PreflightReport:
    """``n_records``: the records training will see (after the holdout split). ``domain``: the
    domain stage's result; the plan's ε is DP-SGD's composed with its spend, as training
    will report it, and DP-SGD's σ is calibrated to the ε the spend leaves."""
    p = cfg.privacy
    spend = composition.DomainSpend.from_dict((domain or {}).get("spend"))
    if n_records < 2:
        raise PrivacyError(f"preflight: {n_records} training records; DP-SGD needs at least 2")
    delta = resolve_delta(p, n_records)
    sample_rate, steps = plan_sampling(n_records, cfg)
    sigma, epsilon = 0.0, math.inf
    if p.enabled:
        if p.target_epsilon > p.epsilon_ceiling:
            raise PrivacyError(f"train.privacy.target_epsilon={p.target_epsilon:g} is above "
                               f"train.privacy.epsilon_ceiling={p.epsilon_ceiling:g}; lower it")
        try:
            sigma = get_noise_multiplier(target_epsilon=(domain or {}).get("sgd_epsilon")
                                         or p.target_epsilon, target_delta=delta,
                                         sample_rate=sample_rate, steps=steps,
                                         accountant=p.accountant)
        except ValueError as exc:
            raise PrivacyError(f"train.privacy.target_epsilon={p.target_epsilon:g} is not "
                               f"reachable with {steps} steps at sample rate {sample_rate:.4g} "
                               f"({exc}); raise it or train fewer steps") from None
        epsilon = composition.epsilon(p.accountant, (sigma, sample_rate, steps), spend, delta)
        if not epsilon <= p.epsilon_ceiling:
            raise PrivacyError(f"the plan reaches ε={epsilon:.3g}, above "
                               f"train.privacy.epsilon_ceiling={p.epsilon_ceiling:g}")
        errors = ModuleValidator.validate(build_model(cfg.model, tokenizer), strict=False)
        if errors:
            raise PrivacyError(f"train.model: Opacus cannot train it privately: {errors[0]}")
    seconds = _dry_run(cfg, tokenizer, seed)
    return PreflightReport(n_records, sample_rate, steps, sigma, epsilon, delta,
                           p.accountant if p.enabled else "none", seconds,
                           spend.releases if p.enabled else 0)


def _dry_run(cfg: TrainConfig, tokenizer: Tokenizer, seed: int) -> float:
    """Two logical steps on random full-length byte strings: the largest batches the plan puts
    through the model, so a shape, memory or Opacus-hook failure shows up now, not at hour two."""
    g = torch.Generator().manual_seed(seed)
    n = 4 * cfg.batch_size
    body = torch.randint(0, 256, (n, cfg.model.block_size - 2), generator=g).tolist()
    seqs = [[tokenizer.bos_id, *row, tokenizer.eos_id] for row in body]
    dry = cfg.model_copy(update={"privacy": cfg.privacy.model_copy(update={"target_delta": None})})
    try:
        _, result = train(seqs, dry, tokenizer, seed, max_steps=DRY_RUN_STEPS)
    except Exception as exc:  # any failure here is the plan's, reported as one line
        raise PrivacyError(f"preflight dry run failed: {type(exc).__name__}: {exc}") from exc
    if not math.isfinite(result.final_loss):
        raise PrivacyError("preflight dry run: the loss is not finite; lower train.learning_rate")
    return result.seconds


@task(name="preflight", cache_policy=NO_CACHE)
def preflight_task(anonymized_path: str, cfg: TrainConfig, seed: int, run_id: str,
                   planted: int = 0, domain: dict | None = None) -> dict:
    """The plan for the records training will actually see: the same holdout split, plus the
    ``planted`` audit canary records; its ε includes the ``domain`` stage's spend."""
    rows = pd.read_parquet(anonymized_path)
    train_df, held_df = split_holdout(rows, cfg.holdout_fraction, seed)
    check_table_size(len(rows), len(train_df), len(held_df), cfg.holdout_fraction)
    report = preflight(len(train_df) + planted, cfg, load_tokenizer(cfg.model), seed, domain)
    tracking.log_params(run_id, {"preflight.noise_multiplier": report.noise_multiplier,
                                 "preflight.steps": report.steps,
                                 "preflight.sample_rate": report.sample_rate,
                                 "preflight.epsilon": report.epsilon})
    create_markdown_artifact(key="preflight-report", markdown=(
        f"# Preflight\n\n- training records: {report.records}\n- sample rate: "
        f"{report.sample_rate:.4f}, steps: {report.steps}\n- σ: {report.noise_multiplier:.3f}"
        f"\n- ε reached: {report.epsilon:.3f} at δ {report.delta:.2e} ({report.accountant}"
        f"{f', with {report.domain_releases} domain releases' if report.domain_releases else ''})\n"
        f"- dry run: {report.dry_run_seconds:.1f} s\n"))
    get_run_logger().info("plan: σ %.3f, %d steps, q %.4f, ε %.2f", report.noise_multiplier,
                          report.steps, report.sample_rate, report.epsilon)
    return asdict(report)
