"""The demo's structured columns before and after issue 13: per-column 1-way TVD of 1,000
generated records against the anonymized demo records, for the old default family
(``causal_lm``, the byte-level GPT-2) and for ``auto`` (``hybrid``), each run as ``make run``
runs it (``privgen run`` then ``privgen generate --n 1000``) in a fresh folder.

The TVD of 1,000 records resampled from the real ones is reported beside them: the sampling
noise floor, below which no model can be told apart from the data. Prints one JSON object
(``--out`` also writes it), with the run and generate times and ε, δ and the audit's power.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "privgen"
N = 1000


def _privgen(args: list[str], cwd: Path, env: dict) -> float:
    started = time.monotonic()
    res = subprocess.run([str(BIN), *args], cwd=cwd, env=env, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"privgen {' '.join(args)} failed:\n{res.stdout[-1500:]}\n{res.stderr[-1500:]}")
    return time.monotonic() - started


def one_way(real: pd.DataFrame, synth: pd.DataFrame, kinds: dict) -> dict[str, float]:
    from tasks.fidelity_tables import marginal_tvd

    columns = [*kinds["categorical"], *kinds["numeric"]]
    return marginal_tvd(real, synth, columns, kinds["numeric"], way=1)["per"]


def noise_floor(real: pd.DataFrame, kinds: dict, draws: int = 20) -> dict[str, float]:
    """Mean 1-way TVD of ``N`` records drawn with replacement from ``real`` against ``real``."""
    rng = np.random.default_rng(0)
    runs = [one_way(real, real.iloc[rng.integers(len(real), size=N)], kinds)
            for _ in range(draws)]
    return {c: float(np.mean([r[c] for r in runs])) for c in runs[0]}


def measure(family: str, extra: list[str], env: dict) -> dict:
    from tasks import draw
    from tasks.evaluate import spec_kinds

    work = Path(tempfile.mkdtemp(prefix=f"privgen-demo-{family}-"))
    try:
        shutil.copytree(REPO / "data" / "demo", work / "data" / "demo")
        sets = [a for s in [f"train.family={family}", *extra] for a in ("--set", s)]
        run_s = _privgen(["run", *sets], work, env)
        gen_s = _privgen(["generate", "--model", "privgen-demo@champion", "--n", str(N),
                          "--out", "outputs/synthetic.parquet"], work, env)
        journal = next(work.glob("runs/*/stages"))
        trained = json.loads((journal / "train.json").read_text())
        evaluated = json.loads((journal / "evaluate.json").read_text())
        report = journal / "audit-report.json"
        power = json.loads(report.read_text())["power"] if report.is_file() else None
        # The journal's paths are relative to the run's folder.
        gen, _ = draw.load(work / trained["model_dir"])
        kinds = spec_kinds(gen.spec)
        names = [*kinds["categorical"], *kinds["numeric"]]
        real = pd.concat([pd.read_parquet(work / trained["train_path"]),
                          pd.read_parquet(work / trained["holdout_path"])],
                         ignore_index=True)[names]
        synth = pd.read_parquet(work / "outputs" / "synthetic.parquet")[names]
        tvd = one_way(real, synth, kinds)
        return {"family": trained["family"], "mechanism": trained.get("mechanism"),
                "run_seconds": round(run_s, 1), "generate_seconds": round(gen_s, 1),
                "epsilon": trained["epsilon"], "delta": trained["delta"],
                "synthetic_records": len(synth), "real_records": len(real),
                "tvd_1way": {c: round(v, 4) for c, v in tvd.items()},
                "tvd_1way_mean": round(float(np.mean(list(tvd.values()))), 4),
                "noise_floor_1way": {c: round(v, 4) for c, v in
                                     noise_floor(real, kinds).items()},
                "eval_tvd_1way_mean": (evaluated["utility"].get("marginals") or {}).get(
                    "tvd_1way_mean"),
                "audit_power": None if power is None else {
                    "has_power": power["has_power"], "summary": power["summary"]}}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="causal_lm,auto",
                    help="comma-separated train.family values (default: causal_lm,auto)")
    ap.add_argument("--no-control-for", default="causal_lm",
                    help="families run with audit.control=false: their TVDs do not depend on "
                         "the control (default: causal_lm, the 'before' model)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PRIVGEN_PSEUDONYM_KEY", "MLFLOW_TRACKING_URI", "PREFECT_HOME",
                        "PREFECT_API_URL")}
    # On a loaded machine Prefect's ephemeral server can take longer than its 20 s default to
    # start, and the run then fails before any work.
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "600")
    skip = set(args.no_control_for.split(",")) if args.no_control_for else set()
    results = {}
    for family in args.families.split(","):
        extra = ["audit.control=false"] if family in skip else []
        results[family] = {**measure(family, extra, env), "settings": extra,
                           "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    if args.out is not None and args.out.is_file():  # families measured before are kept
        results = {**json.loads(args.out.read_text())["families"], **results}
    out = {"records_generated": N, "cpu_count": os.cpu_count(), "families": results}
    text = json.dumps(out, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
