"""Privacy–utility curve on the demo data: held-out perplexity of the demo model trained with the
same number of steps non-privately and at ε = 1, 3 and 8.

The data is the real anonymized demo set (``privgen run --preflight`` in a temporary folder), the
split is the pipeline's. Prints JSON with each point and the ε = 8 / non-private ratio (target
≤ 1.3×), and logs the points and a plot to MLflow (experiment ``privgen-benchmarks``; the store
is MLFLOW_TRACKING_URI, else ./mlflow.db as for ``make run``).
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
EPSILONS = (1.0, 3.0, 8.0)


def anonymized_demo(workdir: Path) -> Path:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    env.pop("PREFECT_API_URL", None)
    subprocess.run([str(Path(sys.executable).parent / "privgen"), "run", "--preflight", "--set",
                    f"workdir={workdir / 'runs'}", "--set",
                    f"ingest.path={REPO / 'data/demo/tickets.csv'}"],
                   cwd=workdir, env=env, check=True, capture_output=True)
    return next((workdir / "runs").glob("*/anonymized/anonymized.parquet"))


def main() -> None:
    import argparse

    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dp-learning-rate", type=float, default=None,
                        help="learning rate of the private runs (default: the config's, as the "
                             "non-private run); DP-SGD often wants a larger one")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of every run (default: the config's, as `make run`)")
    args = parser.parse_args()

    from flows.config import PipelineConfig
    from models.tokenizer import ByteTokenizer
    from tasks.evaluate import perplexity
    from tasks.train import codec_for, encode, split_holdout, train

    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    cfg = PipelineConfig()
    if args.epochs:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(
            update={"epochs": args.epochs})})
    tok = ByteTokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        df = pd.read_parquet(anonymized_demo(Path(tmp)))
    codec = codec_for(cfg.contract, list(df.columns))
    train_df, holdout_df = split_holdout(df, cfg.train.holdout_fraction, cfg.seed)
    seqs = encode(train_df, codec, tok, cfg.train.model.block_size)
    held = encode(holdout_df, codec, tok, cfg.train.model.block_size)

    points = []
    for eps in (None, *EPSILONS):
        privacy = cfg.train.privacy.model_copy(update={"enabled": eps is not None,
                                                       "target_epsilon": eps or 8.0})
        lr = args.dp_learning_rate if eps is not None and args.dp_learning_rate else None
        run_cfg = cfg.train.model_copy(update={"privacy": privacy,
                                               "learning_rate": lr or cfg.train.learning_rate})
        started = time.monotonic()
        model, result = train(seqs, run_cfg, tok, cfg.seed)
        points.append({"epsilon": eps, "learning_rate": run_cfg.learning_rate,
                       "epsilon_spent": None if eps is None else result.epsilon,
                       "steps": result.steps, "noise_multiplier": result.noise_multiplier,
                       "perplexity": perplexity(model, held, tok.pad_id),
                       "seconds": time.monotonic() - started})
    base = points[0]["perplexity"]
    for p in points:
        p["perplexity_ratio"] = p["perplexity"] / base
    at8 = points[-1]["perplexity_ratio"]
    out = {"records": len(seqs), "holdout_records": len(held), "epochs": cfg.train.epochs,
           "model": cfg.train.model.model_dump(), "points": points,
           "ratio_at_epsilon_8": at8, "target_ratio": 1.3, "meets_target": at8 <= 1.3}
    out["mlflow_run_id"] = log_to_mlflow(out)
    print(json.dumps(out, indent=2))


def log_to_mlflow(out: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tasks import tracking

    run_id = tracking.start_run("privgen-benchmarks", "privacy-utility",
                                {"privgen.benchmark": "privacy_utility"})
    private = [p for p in out["points"] if p["epsilon"] is not None]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([p["epsilon_spent"] for p in private], [p["perplexity"] for p in private], "o-",
            label="DP-SGD")
    ax.axhline(out["points"][0]["perplexity"], color="grey", ls="--", label="non-private")
    ax.set(xlabel="ε (δ = 1/10N)", ylabel="held-out perplexity (bytes)",
           title="privacy–utility, demo model, same steps")
    ax.legend()
    fig.tight_layout()
    tracking.log_figure(run_id, fig, "privacy_utility.png")
    for p in out["points"]:
        name = "non_private" if p["epsilon"] is None else f"eps_{p['epsilon']:g}"
        tracking.log_metrics(run_id, {f"perplexity.{name}": p["perplexity"],
                                      f"perplexity_ratio.{name}": p["perplexity_ratio"]})
    tracking.log_dict(run_id, out, "privacy_utility.json")
    tracking.end_run(run_id)
    return run_id


if __name__ == "__main__":
    main()
