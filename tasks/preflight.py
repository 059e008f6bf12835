"""Preflight: what a training plan will cost in privacy, and whether it can run, before any work.

Asks the chosen family for its plan the way its fit will spend (DP-SGD: σ, q and steps from its
own epochs and batch size; marginal families: ρ and their measurements; hybrid: each part and
their composition), refuses plans that cannot meet the target, pass the ε ceiling or drown
DP-SGD in noise, in one line, and dry-runs each DP-SGD network (Opacus validates it) on random
rows. The causal LM keeps its own path: Opacus' validator and a dry run on random bytes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import pandas as pd
import torch
from opacus.accountants.utils import get_noise_multiplier
from opacus.validators import ModuleValidator
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from models import accounting, base
from models.base import Plan, TableSpec
from models.tokenizer import Tokenizer
from tasks import composition, dry_run, tracking
from tasks.errors import ConfigError, PrivacyError
from tasks.train import (
    TrainConfig,
    build_model,
    load_tokenizer,
    resolve_delta,
    split_holdout,
    train,
)
from tasks.train_family import budget_for

DRY_RUN_STEPS = 2
# Held-out records the evaluation needs: its detection test cross-validates in 5 folds, and the
# held-out perplexity and the membership test's non-members come from the same records.
MIN_HELD_OUT = 5
# Training records the evaluation's train-on-real baseline and membership test need.
MIN_TRAIN = 10
# DP-SGD noise σ per record of the expected batch above which preflight refuses (_check_noise).
MAX_NOISE_PER_RECORD = 1.0


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
    """The plan of one training run. ``sample_rate``, ``steps``, ``noise_multiplier``: its
    DP-SGD run (the first, for a composite family; 1.0, 0, 0.0 for a family without one);
    ``plan``: the family's whole plan (``models.base.Plan.to_dict``); ``summary``: one line
    for a person."""

    records: int
    sample_rate: float
    steps: int
    noise_multiplier: float
    epsilon: float
    delta: float
    accountant: str
    dry_run_seconds: float
    domain_releases: int = 0  # Gaussian histograms that estimated the released domains
    family: str = "causal_lm"
    mechanism: str = "DP-SGD (Opacus), Poisson sampling"
    plan: dict = field(default_factory=dict)
    summary: str = ""


def plan_sampling(n_records: int, cfg: TrainConfig) -> tuple[float, int]:
    """(sample rate, expected steps) exactly as ``train`` sets them: Opacus' Poisson loader
    samples at 1 / (batches per epoch) and the accountant counts that many steps per epoch."""
    batches = math.ceil(n_records / cfg.batch_size)
    return 1.0 / batches, batches * cfg.epochs


def preflight(n_records: int, cfg: TrainConfig, tokenizer: Tokenizer | None = None,
              seed: int = 0, domain: dict | None = None) -> PreflightReport:
    """``n_records``: the records training will see (after the holdout split). ``domain``: the
    domain stage's plan (``tasks.domain.plan``): the family it resolved (without it, ``auto``
    stands for the causal LM), the table's shape, and its spend, which the plan's ε includes
    as training will report it. ``tokenizer``: the causal LM's (loaded when not given)."""
    family = (domain or {}).get("family") or cfg.family
    if family in ("auto", "causal_lm"):
        return _causal_lm(n_records, cfg, tokenizer or load_tokenizer(cfg.model), seed, domain)
    return _family(family, n_records, cfg, seed, domain or {})


def _check_ceiling(cfg: TrainConfig) -> None:
    p = cfg.privacy
    if p.enabled and p.target_epsilon > p.epsilon_ceiling:
        raise PrivacyError(f"train.privacy.target_epsilon={p.target_epsilon:g} is above "
                           f"train.privacy.epsilon_ceiling={p.epsilon_ceiling:g}; lower it")


def _check_noise(family: str, sigma: float, expected_batch: float, where: str) -> None:
    """Refuse DP-SGD whose noise would drown every step: σ above ``MAX_NOISE_PER_RECORD``
    × the expected batch puts noise of more than the clipping norm on each coordinate of the
    averaged gradient, which no clipped record's gradient (at most that norm in all) can
    outweigh."""
    if sigma > MAX_NOISE_PER_RECORD * expected_batch:
        raise PrivacyError(
            f"preflight: {family}'s DP-SGD needs noise σ={sigma:.3g} for batches of "
            f"{expected_batch:.3g} records on average: each step would be noise (σ/batch above "
            f"{MAX_NOISE_PER_RECORD:g}); raise {where}batch_size or train.privacy."
            "target_epsilon, train fewer epochs or supply more rows; no privacy budget was spent")


def _causal_lm(n_records: int, cfg: TrainConfig, tokenizer: Tokenizer, seed: int,
               domain: dict | None) -> PreflightReport:
    """The causal LM: DP-SGD's σ calibrated to the ε the domain spend leaves, Opacus'
    validator on the model, a two-step dry run."""
    p = cfg.privacy
    spend = composition.DomainSpend.from_dict((domain or {}).get("spend"))
    if n_records < 2:
        raise PrivacyError(f"preflight: {n_records} training records; DP-SGD needs at least 2")
    delta = resolve_delta(p, n_records)
    sample_rate, steps = plan_sampling(n_records, cfg)
    sigma, epsilon = 0.0, math.inf
    if p.enabled:
        _check_ceiling(cfg)
        try:
            sigma = get_noise_multiplier(target_epsilon=(domain or {}).get("sgd_epsilon")
                                         or p.target_epsilon, target_delta=delta,
                                         sample_rate=sample_rate, steps=steps,
                                         accountant=p.accountant)
        except ValueError as exc:
            raise PrivacyError(f"train.privacy.target_epsilon={p.target_epsilon:g} is not "
                               f"reachable with {steps} steps at sample rate {sample_rate:.4g} "
                               f"({exc}); raise it or train fewer steps") from None
        _check_noise("causal_lm", sigma, sample_rate * n_records, "train.")
        epsilon = composition.epsilon(p.accountant, (sigma, sample_rate, steps), spend, delta)
        if not epsilon <= p.epsilon_ceiling:
            raise PrivacyError(f"the plan reaches ε={epsilon:.3g}, above "
                               f"train.privacy.epsilon_ceiling={p.epsilon_ceiling:g}")
        errors = ModuleValidator.validate(build_model(cfg.model, tokenizer), strict=False)
        if errors:
            raise PrivacyError(f"train.model: Opacus cannot train it privately: {errors[0]}")
    seconds = _dry_run(cfg, tokenizer, seed)
    accountant = p.accountant if p.enabled else "none"
    releases = spend.releases if p.enabled else 0
    events = [accounting.gaussian(sigma, sample_rate, steps)] if p.enabled else []
    mechanism = "DP-SGD (Opacus), Poisson sampling"
    return PreflightReport(
        n_records, sample_rate, steps, sigma, epsilon, delta, accountant, seconds, releases,
        plan={"family": "causal_lm", "mechanism": mechanism, "events": events,
              "epsilon": epsilon, "delta": delta, "dpsgd": True,
              "params": {"sigma": sigma, "q": sample_rate, "steps": steps,
                         "epochs": cfg.epochs, "batch_size": cfg.batch_size}, "parts": {}},
        summary=(f"{n_records} training records, sample rate {sample_rate:.4f}, {steps} steps, "
                 f"σ={sigma:.3f} → ε={epsilon:.2f} at δ={delta:.1e} ({accountant}); "
                 f"dry run {seconds:.0f} s"))


def _family(family: str, n_records: int, cfg: TrainConfig, seed: int,
            domain: dict) -> PreflightReport:
    """A family behind ``models.base``: its own plan within the budget training will give it
    (the domain releases as prior events), refused when it cannot meet the target or its
    DP-SGD noise would drown the signal; each DP-SGD part dry-run on random rows of the
    table's shape, with its own network."""
    p = cfg.privacy
    spend = composition.DomainSpend.from_dict(domain.get("spend"))
    spec = TableSpec.from_dict(domain["shape"]) if domain.get("shape") else None
    _check_ceiling(cfg)
    budget = budget_for(cfg, n_records, spend)
    try:
        plan = _plan(family, cfg, n_records, budget, spec)
    except ValueError as exc:
        raise PrivacyError(f"preflight: {family} cannot stay within train.privacy."
                           f"target_epsilon={p.target_epsilon:g} ({exc}); raise it, or lower "
                           "train.privacy.domain_share; no privacy budget was spent") from None
    parts = [plan, *plan.parts.values()]
    if p.enabled:
        if not plan.epsilon <= p.epsilon_ceiling:
            raise PrivacyError(f"the plan reaches ε={plan.epsilon:.3g}, above "
                               f"train.privacy.epsilon_ceiling={p.epsilon_ceiling:g}")
        for part in parts:
            if part.dpsgd and part.params.get("expected_batch"):
                where = f"train.{family}." + ("" if part is plan else
                                              f"{_part_name(plan, part)}.")
                _check_noise(part.family, part.params["sigma"], part.params["expected_batch"],
                             where)
    seconds = sum(dry_run.dry_run(part, cfg.privacy, seed) for part in parts
                  if part.dpsgd and part.spec is not None and not part.parts)
    events = [*budget.prior, *plan.events]
    sgd = next((e for e in plan.events if e["kind"] == "gaussian" and e["q"] < 1), None)
    accountant = ("rdp" if any(e["kind"] == "zcdp" for e in events) else p.accountant) \
        if p.enabled else "none"
    delta = budget.delta + (spend.delta if p.enabled else 0.0)  # the run's δ, as train reports
    summary = (f"{n_records} training records, family {family}: {describe(plan)} → "
               f"ε={plan.epsilon:.2f} at δ={delta:.1e} ({accountant}"
               + (f", with {spend.releases} domain releases" if spend.releases and p.enabled
                  else "") + ")" + (f"; dry run {seconds:.0f} s" if seconds else ""))
    return PreflightReport(n_records, sgd["q"] if sgd else 1.0, sgd["steps"] if sgd else 0,
                           sgd["sigma"] if sgd else 0.0, plan.epsilon, delta, accountant,
                           seconds, spend.releases if p.enabled else 0, family, plan.mechanism,
                           plan.to_dict(), summary)


def _plan(family: str, cfg: TrainConfig, n_records: int, budget: base.Budget,
          spec: TableSpec | None) -> Plan:
    """The family's plan; for a family that states none, what can be said without it: its
    fit calibrates itself to the budget's ε with the domain releases as prior, so only a
    prior that already reaches that ε is refused. ValueError when the budget cannot be met."""
    try:
        return base.create(family, cfg.section(family)).plan(n_records, budget, spec)
    except NotImplementedError:
        pass
    if budget.enabled and accounting.epsilon(list(budget.prior), budget.delta,
                                             budget.accountant) >= budget.epsilon:
        raise ValueError(f"the releases before this one already reach ε {budget.epsilon:g}")
    return Plan(family, "stated at fit (the family states no plan)", [],
                budget.epsilon if budget.enabled else math.inf, budget.delta)


def _part_name(plan: Plan, part: Plan) -> str:
    return next(k for k, v in plan.parts.items() if v is part)


def describe(plan: Plan) -> str:
    """The plan's mechanism in a few words: σ, q and steps; ρ and measurements; each part."""
    if plan.parts:
        return "; ".join(f"{name} {describe(part)}" for name, part in plan.parts.items())
    p = plan.params
    if plan.dpsgd:
        return (f"{plan.family} DP-SGD σ={p.get('sigma', 0):.3f}, q={p.get('q', 0):.4f}, "
                f"{p.get('steps', 0)} steps")
    counts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in p.items()
                       if isinstance(v, int) and not isinstance(v, bool))
    rho = p.get("rho")
    return f"{plan.family} {plan.mechanism}" + (f", ρ={rho:.4g}" if rho is not None and
                                                math.isfinite(rho) else "") \
        + (f" ({counts})" if counts else "")


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
    ``planted`` audit canary records where the family plants them (the ``domain`` plan says);
    its ε includes the ``domain`` stage's spend."""
    rows = pd.read_parquet(anonymized_path)
    train_df, held_df = split_holdout(rows, cfg.holdout_fraction, seed)
    check_table_size(len(rows), len(train_df), len(held_df), cfg.holdout_fraction)
    planted = (domain or {}).get("planted", planted)
    report = preflight(len(train_df) + planted, cfg, None, seed, domain)
    tracking.log_params(run_id, {"preflight.family": report.family,
                                 "preflight.noise_multiplier": report.noise_multiplier,
                                 "preflight.steps": report.steps,
                                 "preflight.sample_rate": report.sample_rate,
                                 "preflight.epsilon": report.epsilon})
    tracking.log_dict(run_id, asdict(report), "preflight.json")
    create_markdown_artifact(key="preflight-report", markdown=(
        f"# Preflight\n\n- family: {report.family} ({report.mechanism})\n"
        f"- training records: {report.records}\n- plan: {report.summary}\n"
        + "".join(f"- {k}: {v}\n" for k, v in _flat(report.plan).items())))
    get_run_logger().info("plan: %s", report.summary)
    return asdict(report)


def _flat(plan: dict, prefix: str = "") -> dict:
    """The plan's settings and events as ``part.key: value`` lines (events by kind)."""
    out = {f"{prefix}mechanism": plan["mechanism"], f"{prefix}ε": f"{plan['epsilon']:.3f}"}
    out |= {f"{prefix}{k}": v for k, v in plan["params"].items()
            if isinstance(v, int | float | str) and v is not None}
    out[f"{prefix}events"] = ", ".join(
        f"Gaussian σ={e['sigma']:.3g} q={e['q']:.3g} ×{e['steps']}" if e["kind"] == "gaussian"
        else f"zCDP ρ={e['rho']:.3g}" for e in plan["events"]) or "none"
    for name, part in plan.get("parts", {}).items():
        out |= _flat(part, f"{prefix}{name}.")
    return out
