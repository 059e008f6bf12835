"""The family-agnostic privacy audit on a real table: a table family fit at ε and its non-private
control on one split, both audited by tasks.evaluate_audit (log-prob attack where the family has
a likelihood, DCR and DOMIAS on samples always), and the paired power test. Prints JSON.

    .venv/bin/python benchmarks/audit_families.py --family mst --epsilon 1 --synthetic 2000
    .venv/bin/python benchmarks/audit_families.py --family dpctgan --config '{"epochs": 5}'

Categories and bounds are read from the data and declared public (as benchmarks/tabular_peers.py
gives every method); the split is the training stage's (tasks/train.split_holdout, 10 %).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import pandas as pd

from models import base
from models.base import FieldSpec, TableSpec
from tasks.audit import AuditConfig
from tasks.audit_power import audit_power
from tasks.evaluate_audit import audit_generator
from tasks.train import split_holdout

BANK = "/work/shared/data/uci_bank_marketing/bank.csv"
NUMERIC = ("age", "balance", "day", "duration", "campaign", "pdays", "previous")


def public_spec(df: pd.DataFrame) -> TableSpec:
    return TableSpec(tuple(
        FieldSpec(c, "numeric", low=float(df[c].min()), high=float(df[c].max()), integer=True)
        if c in NUMERIC else FieldSpec(c, "categorical", values=tuple(sorted(df[c].unique())))
        for c in df.columns))


def audited(family: str, config: dict, train: pd.DataFrame, holdout: pd.DataFrame,
            spec: TableSpec, budget: base.Budget, n: int, seed: int, audit: AuditConfig) -> dict:
    gen = base.create(family, config)
    start = time.perf_counter()
    fit = gen.fit(train, spec, budget, seed=seed)
    fitted = time.perf_counter() - start
    synth = gen.sample(n, seed)
    result = audit_generator(gen, train, holdout, synth, [], None, audit,
                             fit.epsilon, budget.delta, seed)
    return {"epsilon": fit.epsilon, "fit_seconds": round(fitted, 1), "audit": result}


def _summary(result: dict) -> dict:
    audit = result["audit"]
    out = {"epsilon": result["epsilon"], "fit_seconds": result["fit_seconds"],
           "verdict": audit["verdict"]}
    for attack in ("mia", "dcr", "domias"):
        if (a := audit.get(f"{attack}_attack")) is not None:
            out[attack] = {k: round(v, 4) for k, v in a.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="mst", choices=base.TABLE_FAMILIES)
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--synthetic", type=int, default=2000)
    parser.add_argument("--data", default=BANK)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=json.loads, default={},
                        help='the family\'s config as JSON, e.g. \'{"epochs": 5}\'')
    args = parser.parse_args()
    df = pd.read_csv(args.data, sep=";")
    train, holdout = split_holdout(df, 0.1, args.seed)
    spec, audit = public_spec(df), AuditConfig()
    delta = 1.0 / (10 * len(train))
    runs = {name: audited(args.family, args.config, train, holdout, spec, budget,
                          args.synthetic, args.seed, audit)
            for name, budget in (("dp", base.Budget(epsilon=args.epsilon, delta=delta)),
                                 ("control", base.Budget(enabled=False, delta=delta)))}
    power = audit_power(runs["dp"], runs["control"], alpha=audit.power_alpha)
    print(json.dumps({"family": args.family, "config": args.config, "data": args.data,
                      "records": len(df),
                      "train": len(train), "holdout": len(holdout),
                      "synthetic": args.synthetic, "epsilon_target": args.epsilon,
                      "runs": {k: _summary(v) for k, v in runs.items()},
                      "power": {k: v for k, v in power.items() if k != "summary"},
                      "summary": power["summary"]}, indent=2,
                     default=lambda v: None if isinstance(v, float) and math.isnan(v)
                     else str(v)))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
