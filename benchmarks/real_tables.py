"""A new user's first run on the real datasets in ``../shared/data``, with no hand edit.

For each dataset, in a fresh temporary folder: ``privgen validate FILE --infer c.yaml`` (the
proposal is used as written), ``privgen run --config c.yaml``, then ``privgen generate`` from the
registered model. Reports rows in / kept / quarantined / suppressed, ε and δ, the time of each
command, and how many generated records parse (issue 12: ≥ 95 %). Prints one JSON object.

    python benchmarks/real_tables.py [--datasets bank,reviews] [--n 1000] [--set key=value]...
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

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
BIN = Path(sys.executable).parent / "privgen"
DATASETS = {
    "bank": DATA / "uci_bank_marketing" / "bank.csv",
    "reviews": DATA / "uci_sentiment_labelled_sentences" / "yelp_labelled.txt",
}


def _privgen(args: list[str], cwd: Path, env: dict) -> tuple[float, int, str]:
    started = time.monotonic()
    res = subprocess.run([str(BIN), *args], cwd=cwd, env=env, capture_output=True, text=True)
    return round(time.monotonic() - started, 1), res.returncode, res.stdout + res.stderr


def one(name: str, source: Path, n: int, overrides: list[str], env: dict) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"privgen-{name}-"))
    shutil.copy(source, work / source.name)
    out: dict = {"dataset": name, "file": source.name, "folder": str(work), "steps": {}}

    def step(label: str, args: list[str]) -> bool:
        seconds, rc, text = _privgen(args, work, env)
        out["steps"][label] = {"seconds": seconds, "exit": rc, "last_lines": text.splitlines()[-4:]}
        return rc == 0

    sets = [a for o in overrides for a in ("--set", o)]
    model = f"real-{name}"
    if not (step("infer", ["validate", source.name, "--infer", "c.yaml"])
            and step("run", ["run", "--config", "c.yaml", "--set",
                             f"register.model_name={model}", *sets])
            and step("generate", ["generate", "--model", f"{model}/1", "--n", str(n),
                                  "--out", "out/synthetic.parquet"])):
        return out
    manifest = json.loads((work / "out" / "synthetic.manifest.json").read_text())
    drawn = manifest["generated"]
    out["generated"] = {
        "requested": n, "written": manifest["written"], "drawn": drawn,
        "parse_rate": round(1 - manifest["parse_failures"] / max(drawn, 1), 4),
        "usable_rate": round((drawn - sum(manifest["rejected"].values())) / max(drawn, 1), 4),
        "rejected": manifest["rejected"], "epsilon": manifest["privacy"]["epsilon"],
        "delta": manifest["privacy"]["delta"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="bank,reviews")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PRIVGEN_PSEUDONYM_KEY", "MLFLOW_TRACKING_URI", "PREFECT_HOME",
                        "PREFECT_API_URL")}
    results = [one(d, DATASETS[d], args.n, args.overrides, env)
               for d in args.datasets.split(",")]
    json.dump({"benchmark": "real_tables", "results": results}, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
