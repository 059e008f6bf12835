"""Scaling on this machine (issue 16): DP training throughput of tvae at world size 1 and 2
(``tasks.distributed``: torchrun, gloo on loopback), and generation records/s with 1 and 2 Dask
workers (``benchmarks/generation_scale.py``, run as it is, with fewer records). Prints JSON;
``--write`` also saves it to ``benchmarks/scale.json``.

Training: a seeded bank-shaped table of ``PRIVGEN_SCALE_ROWS`` rows (default 10,000), tvae's
default network, ``PRIVGEN_SCALE_EPOCHS`` epochs (default 2) at ε = 8; generation:
``PRIVGEN_SCALE_GEN_N`` records (default 1,000). Training records/s is records
seen (epochs × rows) over the fit's own time (``FitResult.seconds``, measured inside rank 0)
and over the wall time including the launch (torchrun, imports, the rendezvous). World size 1
runs in this process with 1 and with 2 torch threads; each torchrun worker gets 1 thread
(torchrun sets OMP_NUM_THREADS=1), so world size 2 uses the same 2 cores as 1 × 2 threads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bank_table(n: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    balance = np.clip(rng.lognormal(7, 1.2, n).astype(int) - 500, -10000, 100000)
    return pd.DataFrame({
        "age": rng.integers(18, 96, n),
        "job": rng.choice(["admin.", "services", "technician", "management", "retired"], n),
        "marital": rng.choice(["divorced", "married", "single"], n),
        "balance": balance, "housing": rng.choice(["no", "yes"], n)}).astype(
        {"job": "string", "marital": "string", "housing": "string"})


def bank_spec():
    from models.base import FieldSpec, TableSpec

    jobs = ("admin.", "services", "technician", "management", "retired")
    return TableSpec((
        FieldSpec("age", "numeric", low=18, high=95, integer=True),
        FieldSpec("job", "categorical", values=jobs),
        FieldSpec("marital", "categorical", values=("divorced", "married", "single")),
        FieldSpec("balance", "numeric", low=-10000, high=100000, integer=True),
        FieldSpec("housing", "categorical", values=("no", "yes"))))


def training(rows: int, epochs: int) -> dict:
    import torch

    from models import base
    from tasks import distributed

    table, spec = bank_table(rows), bank_spec()
    budget = base.Budget(epsilon=8.0, delta=1 / (10 * rows))
    section = {"epochs": epochs}
    seen = rows * epochs
    runs = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        gen = base.create("tvae", section)
        started = time.perf_counter()
        fit = gen.fit(table, spec, budget, seed=0)
        wall = time.perf_counter() - started
        runs[f"world_size_1_threads_{threads}"] = _figures(seen, fit, wall)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        gen = distributed.fit("tvae", section, table, spec, budget, 0, Path(tmp) / "model",
                              distributed.DistributedConfig(world_size=2))
        wall = time.perf_counter() - started
        runs["world_size_2_threads_1_each"] = _figures(seen, gen.fit_result, wall)
    eps = [r["epsilon"] for r in runs.values()]
    return {"family": "tvae (default network)", "rows": rows, "epochs": epochs,
            "batch_size": base.create("tvae", section).config.batch_size, "runs": runs,
            "epsilon_relative_spread": _spread(eps)}


def _spread(values: list[float]) -> float:
    """(max - min) / min: σ and ε come from numeric searches in each process (float error)."""
    return float(f"{(max(values) - min(values)) / min(values):.2g}")


def _figures(seen: int, fit, wall: float) -> dict:
    return {"fit_s": round(fit.seconds, 1), "wall_s": round(wall, 1),
            "records_per_s_fit": round(seen / fit.seconds, 1),
            "records_per_s_wall": round(seen / wall, 1), "epsilon": fit.epsilon,
            "sigma": fit.params["sigma"], "steps": fit.params["steps"]}


def generation(n: int) -> dict:
    """``generation_scale.py``'s JSON for ``n`` records (thread runner, Dask 1 and 2)."""
    env = {**os.environ, "PRIVGEN_SCALE_N": str(n)}
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "generation_scale.py")],
                         env=env, capture_output=True, text=True, check=True, cwd=REPO)
    runs = json.loads(out.stdout)["runs"]
    return {"records": n, "source": "benchmarks/generation_scale.py",
            **{k: {"records_per_s": r["records_per_s"], "wall_s": r["wall_s"]}
               for k, r in runs.items()},
            "same_file_on_every_runner": len({r["sha256"] for r in runs.values()}) == 1}


def main() -> None:
    rows = int(os.environ.get("PRIVGEN_SCALE_ROWS", "10000"))
    epochs = int(os.environ.get("PRIVGEN_SCALE_EPOCHS", "2"))
    load_before = os.getloadavg()
    result = {
        "machine": {"cpu_cores": os.cpu_count(), "gpu": False,
                    "load_average_1m_before": round(load_before[0], 2)},
        "training": training(rows, epochs),
        "generation": generation(int(os.environ.get("PRIVGEN_SCALE_GEN_N", "1000"))),
    }
    result["machine"]["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    result["what_this_box_can_show"] = (
        "that 2 processes train with the same σ, q, steps and ε as 1 and produce a model "
        "(the plumbing: torchrun, gloo, DP-DDP, per-rank Poisson sampling), and what the "
        "launch costs")
    result["what_it_cannot_show"] = (
        "speed-up: 2 cores shared with other jobs give 2 processes no more compute than 1 "
        "process with 2 threads, and gloo's all-reduce over loopback adds to every step; "
        "scaling needs one GPU (NCCL) or one node's cores per rank, which this box does not "
        "have (no GPU was lent to this run)")
    text = json.dumps(result, indent=2)
    print(text)
    if "--write" in sys.argv:
        (REPO / "benchmarks" / "scale.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
