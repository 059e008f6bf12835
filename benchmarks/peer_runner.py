"""One peer synthesizer on one training CSV, run inside the peers' own virtual environment
(``benchmarks/peers_venv.py``): smartnoise-synth 1.0.8's AIM and MST (DP) or SDV's
GaussianCopula and CTGAN (non-private references). Imports nothing from privgen.

    python peer_runner.py SETTINGS.json

SETTINGS: ``method`` (smartnoise_aim | smartnoise_mst | sdv_gaussian_copula | sdv_ctgan),
``train_csv``, ``out_csv``, ``result_json``, ``epsilon``, ``delta``, ``seed``, ``n`` (rows to
sample), ``categorical`` (column names), ``numeric`` ({column: [low, high, integer]}: the same
public bounds privgen is given), ``options`` (extra keyword arguments for the synthesizer).
Writes the synthetic rows to ``out_csv`` and ``{fit_seconds, sample_seconds, ...}`` to
``result_json``.
"""

from __future__ import annotations

import json
import random
import sys
import time

import numpy as np
import pandas as pd


def _smartnoise(name: str, s: dict, train: pd.DataFrame):
    from snsynth import Synthesizer
    from snsynth.transform import BinTransformer, LabelTransformer, TableTransformer

    # The columns declared, continuous ones with their public bounds and smartnoise's default
    # bins (10, uniform within the bounds): no preprocessing budget is needed, so
    # preprocessor_eps is 0 and all of ε goes to the mechanism. Categories are read from the
    # data by LabelTransformer, which is free knowledge (privgen is given the same lists).
    transformers = []
    for c in train.columns:
        if c in s["numeric"]:
            low, high, _ = s["numeric"][c]
            transformers.append(BinTransformer(lower=low, upper=high))
        else:
            transformers.append(LabelTransformer())
    synth = Synthesizer.create(name, epsilon=float(s["epsilon"]), delta=float(s["delta"]),
                               **s.get("options", {}))
    started = time.monotonic()
    synth.fit(train, transformer=TableTransformer(transformers), preprocessor_eps=0.0)
    fit = time.monotonic() - started
    started = time.monotonic()
    rows = synth.sample(int(s["n"]))
    out = pd.DataFrame(rows, columns=list(train.columns))
    return out, fit, time.monotonic() - started, {"preprocessor_eps": 0.0,
                                                  "epsilon_mechanism": synth.epsilon}


def _sdv(name: str, s: dict, train: pd.DataFrame):
    from sdv.metadata import Metadata
    from sdv.single_table import CTGANSynthesizer, GaussianCopulaSynthesizer

    columns = {c: {"sdtype": "numerical" if c in s["numeric"] else "categorical"}
               for c in train.columns}
    metadata = Metadata.load_from_dict({"tables": {"table": {"columns": columns}}})
    cls = {"gaussian_copula": GaussianCopulaSynthesizer, "ctgan": CTGANSynthesizer}[name]
    synth = cls(metadata, **s.get("options", {}))
    started = time.monotonic()
    synth.fit({"table": train})  # SDV 2: tables by name
    fit = time.monotonic() - started
    started = time.monotonic()
    out = synth.sample(int(s["n"]))["table"]
    return out, fit, time.monotonic() - started, {}


def main(path: str) -> None:
    with open(path) as f:
        s = json.load(f)
    seed = int(s["seed"])
    # The peers draw from the global generators; seeding them is all that makes a rerun repeat.
    random.seed(seed)
    np.random.seed(seed)
    import torch
    torch.manual_seed(seed)
    torch.set_num_threads(int(s.get("threads", 1)))
    dtypes = {c: "string" for c in s["categorical"]}
    train = pd.read_csv(s["train_csv"], dtype=dtypes, keep_default_na=False)
    train = train[[*s["categorical"], *s["numeric"]]]
    family, _, name = s["method"].partition("_")
    runner = {"smartnoise": _smartnoise, "sdv": _sdv}[family]
    out, fit, sample, extra = runner(name, s, train.astype(
        {c: object for c in s["categorical"]}))
    for c, (low, high, integer) in s["numeric"].items():
        x = pd.to_numeric(out[c], errors="coerce").clip(low, high)
        out[c] = x.round() if integer else x
    out.to_csv(s["out_csv"], index=False)
    result = {"fit_seconds": round(fit, 2), "sample_seconds": round(sample, 2),
              "rows": len(out), **extra}
    with open(s["result_json"], "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
