"""AIM and MST on bank-full (45,211 rows, 17 columns): fit + sample time, mean 1- and 2-way TVD
and, with ``--tstr``, train-on-synthetic/test-on-real ROC AUC on the label ``y`` (fit on a
seeded 80 % split, tested on the other 20 %, train-on-real beside it).

The spec is built from the data (categories = observed values, bounds = min/max): a benchmark
shortcut; the pipeline passes released specs. Prints one JSON object.

    nice -n 5 .venv/bin/python benchmarks/marginal_bank.py [--families aim mst] [--eps 1 8]
        [--tstr]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from models.base import Budget, FieldSpec, TableSpec, create

BANK = Path(__file__).resolve().parents[2] / "shared/data/uci_bank_marketing/bank.zip"


def bank_full() -> pd.DataFrame:
    with zipfile.ZipFile(BANK) as z, z.open("bank-full.csv") as f:
        return pd.read_csv(f, sep=";")


def spec_from(df: pd.DataFrame) -> TableSpec:
    fields = []
    for c in df.columns:
        if pd.api.types.is_numeric_dtype(df[c]):
            fields.append(FieldSpec(c, "numeric", low=float(df[c].min()), high=float(df[c].max()),
                                    integer=bool(pd.api.types.is_integer_dtype(df[c]))))
        else:
            fields.append(FieldSpec(c, "categorical", values=tuple(sorted(df[c].unique()))))
    return TableSpec(tuple(fields))


def _binned(real: pd.DataFrame, synth: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Numerics cut at the real column's deciles, categoricals as they are."""
    r, s = pd.DataFrame(index=real.index), pd.DataFrame(index=synth.index)
    for c in real.columns:
        if pd.api.types.is_numeric_dtype(real[c]):
            edges = np.unique(np.quantile(real[c], np.linspace(0, 1, 11)[1:-1]))
            r[c] = np.searchsorted(edges, real[c].to_numpy(float), side="right")
            s[c] = np.searchsorted(edges, pd.to_numeric(synth[c]).to_numpy(float), side="right")
        else:
            r[c], s[c] = real[c].astype(str), synth[c].astype(str)
    return r, s


def tvd(real: pd.DataFrame, synth: pd.DataFrame, k: int) -> float:
    """Mean total-variation distance over every k-way marginal (numerics in deciles)."""
    r, s = _binned(real, synth)
    out = []
    for cols in itertools.combinations(real.columns, k):
        p = r.value_counts(list(cols), normalize=True)
        q = s.value_counts(list(cols), normalize=True)
        out.append(0.5 * p.sub(q, fill_value=0.0).abs().sum())
    return float(np.mean(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--families", nargs="+", default=["aim", "mst"])
    ap.add_argument("--eps", nargs="+", type=float, default=[1.0, 8.0])
    ap.add_argument("--rows", type=int, default=0, help="first N rows only (0: all)")
    ap.add_argument("--tstr", action="store_true", help="fit on 80 %%, TSTR AUC on 20 %%")
    args = ap.parse_args()
    df = bank_full()
    if args.rows:
        df = df.head(args.rows)
    spec = spec_from(df)
    test = None
    if args.tstr:
        from tasks.fidelity import tstr_auc

        test = df.sample(frac=0.2, random_state=0)
        df = df.drop(test.index)
        kinds = {f.name: f.kind for f in spec.fields}
        cat = [c for c, k in kinds.items() if k == "categorical"]
        num = [c for c, k in kinds.items() if k == "numeric"]
        real_auc = tstr_auc(df, test, "y", cat, num)["roc_auc"]
    results = []
    for family, eps in itertools.product(args.families, args.eps):
        config = {"target": "y"} if family == "aim" else None
        gen = create(family, config)
        start = time.perf_counter()
        fit = gen.fit(df, spec, Budget(epsilon=eps, delta=1e-5), seed=0)
        fitted = time.perf_counter()
        synth = gen.sample(len(df), seed=0)
        done = time.perf_counter()
        results.append({
            "family": family, "epsilon_target": eps, "epsilon": fit.epsilon,
            "epsilon_check": fit.epsilon_check, "fit_s": round(fitted - start, 1),
            "sample_s": round(done - fitted, 1), "total_s": round(done - start, 1),
            "rounds": fit.params.get("rounds"), "measured": len(fit.params["measured"]),
            "tvd_1way": round(tvd(df, synth, 1), 4), "tvd_2way": round(tvd(df, synth, 2), 4)})
        if test is not None:
            results[-1]["tstr_auc"] = round(tstr_auc(synth, test, "y", cat, num)["roc_auc"], 4)
            results[-1]["trtr_auc"] = round(real_auc, 4)
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"benchmark": "marginal_bank", "rows": len(df), "results": results}))


if __name__ == "__main__":
    main()
