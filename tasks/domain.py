"""Released domains: the category lists and bounds generation keeps records to, never free from
the private data. Values a contract marks ``domain: observed`` are estimated under DP (or the
run refuses); the result is the released contract the model is trained, evaluated and sampled
under. Declared-public values pass as they are.

Mechanisms, all Gaussian count releases of L2 sensitivity 1 (one record changes one count):
- categories: a thresholded noisy histogram over the values present, released only above a
  threshold so that a rare value is (all but δ) never released (Korolova et al. 2009; Google's
  partition selection, Desfontaines et al. 2022; Wilkins et al. 2024 for the Gaussian case);
- bounds (numbers, dates as days): a noisy histogram over a public power-of-two ladder finds an
  enclosing range (as Google's ApproxBounds does), then noisy histograms over equal bins of it,
  each narrowed to the bins holding the 1st and 99th percentiles, give those percentiles to a
  bin's width. The extremes never become a bound.
"""

from __future__ import annotations

import logging
import math
import secrets
from dataclasses import asdict, replace
from datetime import date, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from scipy.stats import norm

from models import accounting, base
from models.base import TableSpec
from tasks import composition, release, tracking
from tasks.contract import ColumnSpec, DataContract, Domain, DType, Role
from tasks.errors import PrivacyError
from tasks.preflight import plan_sampling
from tasks.spec import choose_family, table_spec
from tasks.train import TrainConfig, resolve_delta, split_holdout

if TYPE_CHECKING:  # the anonymize stage's scrubbing dependencies are heavy
    from tasks.anonymize import AnonymizeConfig

log = logging.getLogger(__name__)

LADDER = 64  # power-of-two bins each side of zero: |x| up to 2^64, all a float column holds
SUB_BINS = 64  # at most this many equal bins of the enclosing range for the percentiles
REFINE = 2  # histograms after the ladder: bounds to 1/64² of the enclosing range
TAIL = 0.01  # share of records a released bound may leave outside, on each side
_EPOCH = date(1970, 1, 1)
_NOT_RELEASED = (Role.ID, Role.DIRECT_IDENTIFIER, Role.TEXT)


def relied_on(contract: DataContract, operators: dict[str, str],
              columns: list[str]) -> dict[str, list[str]]:
    """Per column, the observed fields the model's release rules (``tasks.release``) would keep
    records to: all of a column released as it is; the bounds of a generalized number or date
    (its bands, years, decades or months are listed between them). ``operators``: anonymize's
    operator per column."""
    out = {}
    for spec in contract.columns:
        if spec.domain is not Domain.OBSERVED or spec.name not in columns \
                or spec.role in _NOT_RELEASED:
            continue
        op = str(operators.get(spec.name, "keep"))
        fields = spec.domain_fields() if op == "keep" else [
            f for f in spec.domain_fields() if f != "allowed"
            and spec.dtype is not DType.STRING] if op == "generalize" else []
        if fields:
            out[spec.name] = fields
    return out


def refusal(needed: dict[str, list[str]]) -> str:
    """The one line a refusing run stops with."""
    listed = "; ".join(f"{c} ({', '.join(f)})" for c, f in needed.items())
    return (f"train.privacy.observed_domains=refuse: generation would keep records to values "
            f"observed in the private data: {listed}. Declare them public in the contract "
            "(domain: public) if the data owner publishes them, remove them, or set "
            "train.privacy.observed_domains=dp to estimate them under DP")


def calibrate(needed: dict[str, list[str]], contract: DataContract, cfg: TrainConfig,
              n_records: int, family: str = "causal_lm",
              spec: TableSpec | None = None) -> tuple[composition.DomainSpend, float | None, float]:
    """(spend, threshold, the family's ε). The ``family`` (its mechanism on ``spec``, as its
    plan states it) is calibrated to ``1 - domain_share`` of the ε target; the domains' one σ
    is the least that keeps the composition within the target. A family that states no plan
    leaves the domains ``domain_share`` of ε on their own. Thresholds take half of
    ``domain_share`` of δ: a noisy count of 1 passes with that probability, per category
    column."""
    p = cfg.privacy
    specs = {c.name: c for c in contract.columns}
    categories = sum("allowed" in f for f in needed.values())
    bounded = sum(_bounded(specs[c], f) for c, f in needed.items())
    releases = categories + (1 + REFINE) * bounded
    if not releases:
        return composition.DomainSpend(), None, p.target_epsilon
    delta = resolve_delta(p, n_records)
    family_epsilon = (1 - p.domain_share) * p.target_epsilon
    per_column = p.domain_share * delta / 2 / max(categories, 1)
    thresholds = per_column * categories
    events = family_events(family, cfg, n_records, family_epsilon, delta, thresholds, spec)
    target = p.target_epsilon if events is not None else p.domain_share * p.target_epsilon
    sigma = composition.domain_sigma(p.accountant, releases, thresholds, events or [], target,
                                     delta)
    threshold = 1.0 + sigma * float(norm.isf(per_column))
    return composition.DomainSpend(sigma, releases, thresholds), threshold, family_epsilon


def family_events(family: str, cfg: TrainConfig, n_records: int, epsilon: float, delta: float,
                  thresholds: float, spec: TableSpec | None) -> list[dict] | None:
    """The events ``family`` plans at ``epsilon`` alone (δ: what thresholds leave of
    ``delta``); None when it states no plan. The causal LM's DP-SGD as ``train`` calibrates it
    (Opacus' search at the full δ)."""
    p = cfg.privacy
    if family == "causal_lm":
        from opacus.accountants.utils import get_noise_multiplier

        sample_rate, steps = plan_sampling(n_records, cfg)
        sigma = get_noise_multiplier(target_epsilon=epsilon, target_delta=delta,
                                     sample_rate=sample_rate, steps=steps,
                                     accountant=p.accountant)
        return [accounting.gaussian(sigma, sample_rate, steps)]
    budget = base.Budget(epsilon=epsilon, delta=delta - thresholds, accountant=p.accountant,
                         max_grad_norm=p.max_grad_norm)
    try:
        return base.create(family, cfg.section(family)).plan(n_records, budget, spec).events
    except NotImplementedError:
        return None
    except ValueError as exc:
        raise PrivacyError(f"train.privacy.domain_share: {family} cannot spend "
                           f"{1 - p.domain_share:.0%} of train.privacy.target_epsilon="
                           f"{p.target_epsilon:g} ({exc})") from None


def _bounded(spec: ColumnSpec, fields: list[str]) -> bool:
    return bool({"min", "max", "earliest", "latest"} & set(fields)) and spec.dtype is not \
        DType.STRING


def release_categories(values: pd.Series, sigma: float, threshold: float,
                       rng: np.random.Generator) -> tuple[str, ...]:
    """The values whose count plus N(0, σ²) noise exceeds ``threshold``, sorted."""
    counts = values.dropna().astype(str).value_counts()
    noisy = counts.to_numpy(float) + rng.normal(0.0, sigma, len(counts))
    return tuple(sorted(counts.index[noisy > threshold]))


def _ladder_bin(x: np.ndarray) -> np.ndarray:
    """Bin -LADDER..LADDER: 0 holds (-1, 1), b > 0 holds [2^(b-1), 2^b), b < 0 its mirror."""
    mag = np.floor(np.log2(np.maximum(np.abs(x), 1.0))) + 1
    return (np.sign(x) * np.where(np.abs(x) < 1, 0, np.minimum(mag, LADDER))).astype(int)


def _ladder_edges(b: int) -> tuple[float, float]:
    if b == 0:
        return -1.0, 1.0
    low, high = 2.0 ** (abs(b) - 1), 2.0 ** abs(b)
    return (low, high) if b > 0 else (-high, -low)


def _edges(low: float, high: float, integer: bool, bins: int) -> np.ndarray:
    """``bins`` equal bins of [low, high); whole-number edges for integers and dates."""
    if not integer:
        return np.linspace(low, high, bins + 1)
    if high - low <= bins:
        return np.arange(low, high + 1)
    return np.unique(np.floor(np.linspace(low, high, bins + 1)))


def _percentiles(noisy: np.ndarray, tail: float) -> tuple[int, int] | None:
    """Indices of the bins holding the ``tail`` and ``1 - tail`` points of ``noisy``."""
    cdf = np.cumsum(noisy)
    if cdf[-1] <= 0:
        return None
    return (int(np.searchsorted(cdf, tail * cdf[-1], side="left")),
            int(np.searchsorted(cdf, (1 - tail) * cdf[-1], side="left")))


def release_bounds(x: np.ndarray, sigma: float, rng: np.random.Generator,
                   integer: bool) -> tuple[float, float] | None:
    """(low, high) leaving about ``TAIL`` of ``x`` outside on each side, from 1 + ``REFINE``
    noisy histograms: the power-of-two ladder, then equal bins of the range found, narrowed
    each time to the bins holding the percentiles. None when the noise hides every count.

    Noisy counts below a cut count as empty (post-processing): summed over empty bins, noise
    would pass for records in the tails and push the percentiles outwards."""
    counts = np.bincount(_ladder_bin(x) + LADDER, minlength=2 * LADDER + 1).astype(float)
    noisy = counts + rng.normal(0.0, sigma, len(counts))
    kept = noisy >= 3 * sigma
    # An empty bin passes 3σ once in 740: a kept bin below 5σ with no kept bin within two
    # steps is taken for such a stray, so it cannot stretch the range to 2^60.
    near = np.convolve(kept, np.ones(5), mode="same") - kept > 0
    noisy[~kept | ((noisy < 5 * sigma) & ~near)] = 0.0
    found = _percentiles(noisy, TAIL / 2)
    if found is None:
        return None
    low = _ladder_edges(found[0] - LADDER)[0]
    high = _ladder_edges(found[1] - LADDER)[1]
    if integer:
        low, high = math.floor(low), math.ceil(high)
    mass = noisy[found[0]:found[1] + 1].sum()
    for _ in range(REFINE):
        # As many bins as keep about 4σ of records each: finer bins would drown in noise.
        edges = _edges(low, high, integer, int(np.clip(mass / (4 * sigma), 2, SUB_BINS)))
        counts, _ = np.histogram(np.clip(x, edges[0], edges[-1]), bins=edges)
        noisy = counts + rng.normal(0.0, sigma, len(counts))
        noisy[noisy < 2 * sigma] = 0.0
        found = _percentiles(noisy, TAIL)
        if found is None:
            return None
        low, high = float(edges[found[0]]), float(edges[found[1] + 1])
        mass = noisy[found[0]:found[1] + 1].sum()
    return (low, high - 1) if integer else (low, high)


def _as_days(values: pd.Series, spec: ColumnSpec) -> np.ndarray:
    """Days since 1970 of each date; a generalized form (2025, 1980s, 2025-03) at its start."""
    text = values.dropna().astype(str)
    formed = text.str.fullmatch(r"\d{3}0s|\d{4}(?:-\d{2})?")
    starts = (text[formed].str.replace(r"^(\d{3}0)s$", r"\1", regex=True)
              .str.replace(r"^(\d{4})$", r"\1-01", regex=True) + "-01")
    fmt = spec.format or "ISO8601"
    moments = pd.concat([pd.to_datetime(text[~formed], format=fmt, errors="coerce", utc=True),
                         pd.to_datetime(starts, format="%Y-%m-%d", errors="coerce", utc=True)])
    return ((moments.dropna() - pd.Timestamp(_EPOCH, tz="UTC"))
            / pd.Timedelta(days=1)).to_numpy(float)


def _as_numbers(values: pd.Series) -> np.ndarray:
    """Each number; a generalized band ("30-39") at its lower end; withheld values dropped."""
    text = values.dropna().astype(str)
    numbers = pd.to_numeric(text, errors="coerce")
    band = text.str.extract(r"^(-?\d+(?:\.\d+)?)--?\d+(?:\.\d+)?$")[0]
    return numbers.fillna(pd.to_numeric(band, errors="coerce")).dropna().to_numpy(float)


def estimate(df: pd.DataFrame, contract: DataContract, spend: composition.DomainSpend,
             threshold: float, needed: dict[str, list[str]],
             seed: int) -> tuple[DataContract, dict]:
    """The released contract and, per column, what was declared public or paid for (counts and
    settings, never an observed value that was not released). Observed fields nothing relies on
    are left out of the released contract."""
    rng = np.random.default_rng([seed, 0xD0])
    specs, report = [], {"public": {}, "estimated": {}, "withheld": {}}
    for spec in contract.columns:
        if spec.domain is not Domain.OBSERVED:
            if spec.domain_fields():
                report["public" if spec.domain is Domain.PUBLIC else "estimated"][
                    spec.name] = spec.domain_fields()
            specs.append(spec)
            continue
        fields = needed.get(spec.name, [])
        dropped = [f for f in spec.domain_fields() if f not in fields]
        update: dict = dict.fromkeys(spec.domain_fields(), None) | {"domain": Domain.ESTIMATED}
        entry: dict = {"fields": fields, "noise_multiplier": spend.noise_multiplier}
        if "allowed" in fields:
            released = release_categories(df[spec.name], spend.noise_multiplier, threshold, rng)
            update["allowed"] = released or None
            entry |= {"mechanism": "Gaussian thresholded histogram", "threshold": threshold,
                      "categories_released": len(released)}
        if _bounded(spec, fields):
            dated = spec.dtype in (DType.DATE, DType.DATETIME)
            x = _as_days(df[spec.name], spec) if dated else _as_numbers(df[spec.name])
            bounds = release_bounds(x, spend.noise_multiplier, rng,
                                    integer=dated or spec.dtype is DType.INTEGER)
            entry["mechanism"] = ("noisy-histogram percentiles "
                                  f"({TAIL:.0%} and {1 - TAIL:.0%}) over a power-of-two ladder")
            if bounds is None:
                entry["bounds_released"] = None
            elif dated:
                update["earliest"], update["latest"] = (_EPOCH + timedelta(days=b) for b in bounds)
                entry["bounds_released"] = [update["earliest"].isoformat(),
                                            update["latest"].isoformat()]
            else:
                update["min"], update["max"] = bounds
                entry["bounds_released"] = list(bounds)
        if fields:
            report["estimated"][spec.name] = entry
        if dropped:
            report["withheld"][spec.name] = dropped
        specs.append(spec.model_copy(update=update))
    released = DataContract(columns=tuple(specs), extra_columns=contract.extra_columns)
    # Through the validators again: a model_copy skips them (min above max, say).
    return DataContract.model_validate(released.model_dump()), report


def plan(contract: DataContract, operators: dict[str, str], columns: list[str],
         cfg: TrainConfig, n_records: int, anonymize: AnonymizeConfig | None = None,
         planted: int = 0) -> dict:
    """What the domains will cost, from the contract and settings alone (no data value), so
    preflight can show the run's total ε before anything is spent; and the family training
    will use (``auto`` resolved as ``train`` will resolve it), which the domains' share is
    calibrated against, with the table's shape (columns, kinds, category counts; stand-in
    values) for its plan. Raises PrivacyError in refuse mode when generation would rely on
    observed values. ``n_records``: what training will see; ``planted``: audit canaries,
    counted when the family plants them (a likelihood and a text column). ``anonymize``: the
    settings that release ``columns`` (None: ``contract`` describes them as released)."""
    p = cfg.privacy
    needed = relied_on(contract, operators, columns) if p.enabled else {}
    if needed and p.observed_domains == "refuse":
        raise PrivacyError(refusal(needed))
    family, reason, spec = planned_family(contract, needed, columns, cfg, anonymize)
    text = [c.name for c in contract.with_role(Role.TEXT) if c.name in columns]
    likelihood = family == "causal_lm" or base.family_class(family).has_log_prob
    planted = planted if text and likelihood else 0
    spend, threshold, share = calibrate(needed, contract, cfg, n_records + planted, family,
                                        spec)
    return {"needed": needed, "spend": asdict(spend), "threshold": threshold,
            "sgd_epsilon": share, "share": p.domain_share if spend.releases else 0.0,
            "family": family, "family_reason": reason, "planted": planted,
            "shape": _stand_ins(spec).to_dict() if spec else None}


def planned_family(contract: DataContract, needed: dict[str, list[str]], columns: list[str],
                   cfg: TrainConfig, anonymize: AnonymizeConfig | None
                   ) -> tuple[str, str, TableSpec | None]:
    """(family, reason, table spec) as ``train`` will find them if the estimates release what
    ``needed`` asks (the declared values standing in for them; observed fields nothing
    relies on dropped, as ``estimate`` drops them; a non-private run keeps the contract as
    it is, as ``domain_task`` does). The spec is None for the causal LM."""
    specs = []
    for spec in contract.columns:
        if spec.domain is Domain.OBSERVED and cfg.privacy.enabled:  # else released as it is
            kept = needed.get(spec.name, [])
            spec = spec.model_copy(update={f: None for f in spec.domain_fields()
                                           if f not in kept})
        specs.append(spec)
    released = DataContract(columns=tuple(specs), extra_columns=contract.extra_columns)
    if anonymize is not None:
        released = release.released_contract(released, anonymize)
    family, reason = (cfg.family, "set in train.family") if cfg.family != "auto" else \
        choose_family(released, columns)
    return family, reason, None if family == "causal_lm" else table_spec(released, columns)


def _stand_ins(spec: TableSpec) -> TableSpec:
    """``spec`` with every value replaced by a stand-in: the plan carries the table's shape,
    never a value seen in the private data."""
    return TableSpec(tuple(
        replace(f, values=tuple(f"value {i}" for i in range(len(f.values)))
                if f.values is not None else None,
                low=0.0 if f.kind == "numeric" else None,
                high=1.0 if f.kind == "numeric" else None) for f in spec.fields))


def _training_rows(anonymized_path: str, cfg: TrainConfig, seed: int) -> pd.DataFrame:
    return split_holdout(pd.read_parquet(anonymized_path), cfg.holdout_fraction, seed)[0]


@task(name="domain-plan", cache_policy=NO_CACHE)
def plan_task(anonymized_path: str, contract: DataContract, anonymize: AnonymizeConfig,
              cfg: TrainConfig, seed: int, run_id: str, planted: int = 0) -> dict:
    """``plan`` for the records training will see (the same holdout split, plus the
    ``planted`` canaries where the family plants them)."""
    from tasks.anonymize import operators_for

    train_df = _training_rows(anonymized_path, cfg, seed)
    result = plan(contract, operators_for(contract, anonymize), list(train_df.columns), cfg,
                  len(train_df), anonymize, planted)
    spend = result["spend"]
    tracking.log_params(run_id, {"privacy.domain_releases": spend["releases"],
                                 "privacy.domain_noise_multiplier": spend["noise_multiplier"],
                                 "privacy.domain_share": result["share"],
                                 "privacy.sgd_target_epsilon": result["sgd_epsilon"]})
    get_run_logger().info("domains: %d observed columns to estimate under DP (%d releases, "
                          "σ %.2f), calibrated against family %s (%s)", len(result["needed"]),
                          spend["releases"], spend["noise_multiplier"], result["family"],
                          result["family_reason"])
    return result


@task(name="domain", cache_policy=NO_CACHE)
def domain_task(anonymized_path: str, contract: DataContract, planned: dict, cfg: TrainConfig,
                seed: int, run_id: str) -> dict:
    """Estimate the planned domains on the records training will see. Returns the released
    contract (JSON) and the per-column report for the datasheet, which is also logged."""
    spend = composition.DomainSpend.from_dict(planned["spend"])
    # A release run draws its noise from an unpredictable seed, as Opacus' secure mode does
    # for DP-SGD; numpy's Gaussian sampler is still not hardened against floating-point
    # attacks (Mironov 2012), which the histogram's threshold margin does not fix either.
    noise_seed = secrets.randbits(63) if cfg.privacy.secure_mode else seed
    released, report = estimate(_training_rows(anonymized_path, cfg, seed), contract, spend,
                                planned["threshold"], planned["needed"], noise_seed)
    report["share"] = planned["share"]
    if not cfg.privacy.enabled:
        released, report["note"] = contract, "training is not private: nothing estimated"
    tracking.log_dict(run_id, report, "released_domains.json")
    get_run_logger().info("domains: %d estimated under DP, %d declared public",
                          len(report["estimated"]), len(report["public"]))
    return {"contract": released.model_dump(mode="json"), "report": report}
