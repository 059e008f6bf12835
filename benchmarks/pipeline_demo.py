"""Time `make run`'s two commands on the full demo data and scan every store for leaks.

Runs in a fresh temporary working directory with the local key-file default, then looks for
each planted personal value (data/demo/planted_pii.json) and for the key in the MLflow store,
Prefect's database, the generated files, the anonymized and model folders and the console
output. Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "privgen"
KINDS = ("full_names", "emails", "phones", "card_numbers", "ibans", "other_person_names",
         "order_numbers")


def timed(args: list[str], cwd: Path, env: dict) -> tuple[float, str]:
    started = time.monotonic()
    res = subprocess.run([str(BIN), *args], cwd=cwd, env=env, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"privgen {' '.join(args)} failed:\n{res.stderr[-2000:]}")
    return time.monotonic() - started, res.stdout + res.stderr


def file_text(path: Path) -> str:
    if path.suffix == ".parquet":
        return pd.read_parquet(path).to_csv(index=False)
    return path.read_bytes().decode("utf-8", errors="ignore")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="privgen-bench-"))
    shutil.copytree(REPO / "data" / "demo", work / "data" / "demo")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PRIVGEN_PSEUDONYM_KEY", "MLFLOW_TRACKING_URI", "PREFECT_HOME",
                        "PREFECT_API_URL")}
    train_s, train_out = timed(["run"], work, env)
    gen_s, gen_out = timed(["generate", "--n", "1000", "--out", "outputs/synthetic.parquet"],
                           work, env)
    models = json.loads(subprocess.run([str(BIN), "models", "--json"], cwd=work, env=env,
                                       capture_output=True, text=True, check=True).stdout)

    planted = json.loads((REPO / "data" / "demo" / "planted_pii.json").read_text())
    secrets = sorted({v.lower() for k in KINDS for v in planted[k]})
    key = (work / ".privgen" / "pseudonym.key").read_text().strip()
    places = [work / "mlflow.db", work / "mlruns", work / ".privgen" / "prefect",
              work / "outputs", *work.glob("runs/*/anonymized"), *work.glob("runs/*/model")]
    files = [p for place in places for p in ([place] if place.is_file() else place.rglob("*"))
             if p.is_file()]
    leaks: dict[str, int] = {}
    for path in files:
        low = file_text(path).lower()
        hits = sum(1 for s in secrets if s in low)
        if hits:
            leaks[str(path.relative_to(work))] = hits
    console = (train_out + gen_out).lower()
    key_elsewhere = [str(p.relative_to(work)) for p in work.rglob("*")
                     if p.is_file() and p.name != "pseudonym.key" and key in file_text(p)]
    champion = next(m for m in models if "champion" in m["aliases"])
    print(json.dumps({
        "train_flow_seconds": round(train_s, 1), "generate_1000_seconds": round(gen_s, 1),
        "pipeline_seconds": round(train_s + gen_s, 1),
        "epsilon": float(champion["epsilon"]), "delta": float(champion["delta"]),
        "perplexity": float(champion["perplexity"]),
        "generated_rows": len(pd.read_parquet(work / "outputs" / "synthetic.parquet")),
        "planted_values_checked": len(secrets), "files_scanned": len(files),
        "files_with_personal_data": leaks,
        "personal_values_in_console": sum(1 for s in secrets if s in console),
        "files_with_key_outside_key_file": key_elsewhere,
        "cpu_count": os.cpu_count(),
    }, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
