"""privgen's side of ``tabular_peers.py``: the contract and table spec (declared public, or
paid for under DP with the domain stage's own mechanisms) and one family's fit and sample
through ``models.base.create``, ``auto`` resolved as the train stage resolves it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.stats import norm

from models import accounting, base
from models.base import Budget, FieldSpec, TableSpec
from tasks.contract import ColumnSpec, DataContract, DType, Role
from tasks.spec import table_spec
from tasks.train_config import TrainConfig, resolve_family

# The families' own quick settings for --quick (only fields a family's config has are set).
QUICK = {"epochs": 2, "rounds": 4, "round_iters": 50}
# Share of the mechanism's ρ the paid-for domains get (the pipeline's default domain share).
DOMAIN_SHARE = 0.1


def public_contract(train: pd.DataFrame, categorical: list[str],
                    numeric: list[str]) -> DataContract:
    """Categories and bounds read off the training split, declared public: the free knowledge
    the peers get too."""
    columns = [ColumnSpec(name=c, role=Role.CATEGORY, nullable=bool(train[c].isna().any()),
                          allowed=tuple(sorted(train[c].dropna().astype(str).unique())))
               for c in categorical]
    for c in numeric:
        x = train[c].dropna()
        columns.append(ColumnSpec(name=c, role=Role.NUMERIC, nullable=bool(train[c].isna().any()),
                                  dtype=DType.INTEGER if (x % 1 == 0).all() else DType.FLOAT,
                                  min=float(x.min()), max=float(x.max())))
    return DataContract(columns=tuple(columns))


def public_spec(contract: DataContract) -> TableSpec:
    """The table spec the train stage builds from ``contract`` (``tasks.spec.table_spec``)."""
    return table_spec(contract, contract.names)


def paid_spec(train: pd.DataFrame, spec: TableSpec, epsilon: float, delta: float,
              seed: int) -> tuple[pd.DataFrame, TableSpec, tuple[dict, ...], float, dict]:
    """The domains estimated under DP with the domain stage's mechanisms (tasks.domain: a
    thresholded Gaussian histogram per categorical column, ladder-and-percentile bounds per
    numeric one), all at one noise multiplier σ set so they take ``DOMAIN_SHARE`` of the ρ
    the target allows. Half of δ goes to the thresholds (split over the categorical columns),
    half to the family. Returns (training rows with unreleased values made missing and
    numerics clipped, the released spec, the releases as prior events, the family's δ, a
    report)."""
    from tasks.domain import REFINE, release_bounds, release_categories

    cats = [f for f in spec.structured if f.kind == "categorical"]
    nums = [f for f in spec.structured if f.kind == "numeric"]
    releases = len(cats) + (1 + REFINE) * len(nums)
    family_delta = delta / 2 if cats else delta
    rho = DOMAIN_SHARE * accounting.rho_for(epsilon, family_delta, [])
    sigma = math.sqrt(releases / (2 * rho))  # ρ of a Gaussian of sensitivity 1: 1/(2σ²)
    per_column = (delta - family_delta) / max(len(cats), 1)
    threshold = 1.0 + sigma * float(norm.isf(per_column)) if cats else math.inf
    rng = np.random.default_rng([seed, 0xD0])
    fields, table, report = [], train.copy(), {"noise_multiplier": round(sigma, 2),
                                                "releases": releases,
                                                "threshold": round(threshold, 1), "columns": {}}
    for f in spec.fields:
        if f.kind == "categorical":
            values = release_categories(train[f.name], sigma, threshold, rng)
            kept = table[f.name].where(table[f.name].astype(str).isin(values))
            table[f.name] = kept.astype(object).where(kept.notna(), None)
            fields.append(FieldSpec(f.name, "categorical", values=values, nullable=True))
            report["columns"][f.name] = {"released": len(values), "declared": len(f.values)}
        else:
            x = pd.to_numeric(train[f.name], errors="coerce").dropna().to_numpy(float)
            bounds = release_bounds(x, sigma, rng, integer=f.integer) or (f.low, f.high)
            table[f.name] = table[f.name].clip(*bounds)
            fields.append(FieldSpec(f.name, "numeric", low=float(bounds[0]),
                                    high=float(bounds[1]), integer=f.integer,
                                    nullable=f.nullable))
            report["columns"][f.name] = {"bounds": [float(b) for b in bounds],
                                         "declared": [f.low, f.high]}
    prior = (accounting.gaussian(sigma, 1.0, releases),)
    return table, TableSpec(tuple(fields)), prior, family_delta, report


def run_privgen(method: str, train: pd.DataFrame, contract: DataContract, epsilon: float,
                delta: float, n: int, seed: int, *, label: str, quick: bool = False,
                paid: Callable | None = None) -> tuple[pd.DataFrame, dict]:
    """Fit ``method`` (a table family; ``auto`` and ``auto_paid``: what the train stage runs
    for ``train.family: auto`` with ``label`` as the evaluation label, through the same
    ``tasks.train_config.resolve_family``) at ``epsilon``, ``delta`` and sample ``n`` rows. Returns
    the synthetic frame and the row's figures (seconds, ε spent as the family reports it)."""
    spec = public_spec(contract)
    cfg = TrainConfig(family="auto" if method in ("auto", "auto_paid") else method)
    family, reason, cfg = resolve_family(cfg, contract, spec.names, label)
    config = dict(cfg.section(family))
    if quick:
        fields = base.family_class(family).config_class.model_fields
        config |= {k: v for k, v in QUICK.items() if k in fields}
    prior: tuple[dict, ...] = ()
    row: dict = {"method": method, "family": family, "family_reason": reason,
                 "epsilon": epsilon, "private": True}
    if paid is not None:
        train, spec, prior, delta, row["domains"] = paid(train, spec, epsilon, delta, seed)
    gen = base.create(family, config or None)
    # CPU seconds (all of this process's threads) beside wall seconds: on a shared machine
    # the wall time grows with the load, the CPU time hardly does.
    started, cpu = time.monotonic(), time.process_time()
    fit = gen.fit(train[spec.names], spec, Budget(epsilon=epsilon, delta=delta, prior=prior),
                  seed=seed)
    row["fit_seconds"] = round(time.monotonic() - started, 1)
    row["fit_cpu_seconds"] = round(time.process_time() - cpu, 1)
    started, cpu = time.monotonic(), time.process_time()
    synth = gen.sample(n, seed=seed)
    row["sample_seconds"] = round(time.monotonic() - started, 1)
    row["sample_cpu_seconds"] = round(time.process_time() - cpu, 1)
    row |= {"rows": len(synth), "epsilon_spent": round(fit.epsilon, 4),
            "epsilon_check": None if fit.epsilon_check is None else round(fit.epsilon_check, 4),
            "delta": delta, "mechanism": fit.mechanism, "config": config}
    return synth, row
