"""Image families on the 8×8 digits that ship with scikit-learn (issue 14): dcgan and convvae at
ε = 1, 8 and non-private, evaluated by tasks.evaluate_images (TSTR and TRTR accuracy of a small
CNN, Fréchet distance on its features, real-vs-synthetic detector AUC) and audited by
tasks.audit_images against the non-private control; prints JSON, writes
benchmarks/images.json and the privacy–utility plot benchmarks/images.png.

Fixed split: 1,437 training and 360 held-out digits (stratified, random_state 0). Run
``.venv/bin/python benchmarks/images.py`` (add ``--epochs 2 --families convvae`` for a quick look).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models import images as img  # noqa: E402
from models.base import Budget, FieldSpec, TableSpec, create  # noqa: E402
from tasks.audit import AuditConfig  # noqa: E402
from tasks.audit_images import audit_images, audit_metrics  # noqa: E402
from tasks.evaluate_images import ImageEvaluateConfig, evaluate_images, one_thread  # noqa: E402
from tasks.storage import write_json  # noqa: E402

HERE = Path(__file__).parent
LABELS = tuple(str(d) for d in range(10))
SPEC = TableSpec((FieldSpec("image", "image", shape=(8, 8, 1)),
                  FieldSpec("label", "categorical", values=LABELS)))
DELTA = 1e-5


def digits():
    """(train, holdout) frames of models.images: sklearn's digits (0–16) scaled to 0–255."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    arr = np.round(d.images * 255 / 16).astype(np.uint8)[..., None]
    tr, te = train_test_split(np.arange(len(arr)), test_size=0.2, stratify=d.target,
                              random_state=0)
    return img.to_frame(arr[tr], d.target[tr]), img.to_frame(arr[te], d.target[te])


def fit(family: str, epsilon: float, epochs: int, train, seed: int):
    gen = create(family, {"epochs": epochs})
    budget = Budget(enabled=math.isfinite(epsilon),
                    epsilon=epsilon if math.isfinite(epsilon) else 8.0, delta=DELTA)
    start, cpu = time.perf_counter(), time.process_time()
    result = gen.fit(train, SPEC, budget, seed=seed)
    return gen, {"fit_seconds": time.perf_counter() - start,
                 "fit_cpu_seconds": time.process_time() - cpu,
                 "epsilon_spent": result.epsilon, "final_loss": result.final_loss}


def run(families: list[str], epsilons: list[float], epochs: int, n: int, seed: int,
        out: Path | None) -> dict:
    train, holdout = digits()
    cfg = ImageEvaluateConfig(synthetic_images=n)
    rows: list[dict] = []
    report = {"dataset": "sklearn digits 8x8", "train": len(train), "holdout": len(holdout),
              "epochs": epochs, "synthetic_images": n, "seed": seed, "delta": DELTA,
              "cpu": platform.processor() or platform.machine(), "rows": rows,
              "note": "frechet_distance: on the 64 penultimate features of a small CNN "
                      "trained on the real training digits, not the FID (no Inception "
                      "weights offline)"}
    for family in families:
        models = {}
        for eps in epsilons:
            gen, row = fit(family, eps, epochs, train, seed)
            models[eps] = gen
            metrics = evaluate_images(gen, train, holdout, n, seed, cfg)
            row |= {"family": family, "epsilon": eps if math.isfinite(eps) else None,
                    "private": math.isfinite(eps),
                    **{k.removeprefix("eval.").replace("seconds", "eval_seconds"): v
                       for k, v in metrics.items()}}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if "class_counts" not in k}),
                  file=sys.stderr, flush=True)
            if out is not None:  # kept after each row: a long run that dies keeps its rows
                write_json(report, out)
        control = models.get(math.inf)
        for eps, gen in models.items():
            if control is None or gen is control:
                continue
            audit = audit_images(gen, control, train, holdout, n=n, seed=seed,
                                 audit=AuditConfig(mia_records=len(holdout)))
            row = next(r for r in rows if r["family"] == family and r["epsilon"] == eps)
            row["audit"] = audit_metrics(audit)
            row["audit_summary"] = audit["power"]["summary"]
            row["audit_white_box"] = audit["candidate"].get("white_box")
            if out is not None:
                write_json(report, out)
    return report


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    finite = sorted({r["epsilon"] for r in rows if r["epsilon"] is not None})
    x_of = {e: i for i, e in enumerate(finite)} | {None: len(finite)}
    ticks = [f"ε={e:g}" for e in finite] + ["non-private"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for family in sorted({r["family"] for r in rows}):
        mine = sorted((r for r in rows if r["family"] == family), key=lambda r: x_of[r["epsilon"]])
        xs = [x_of[r["epsilon"]] for r in mine]
        for ax, key in zip(axes, ("tstr_accuracy", "frechet_distance", "detection_auc"),
                           strict=True):
            ax.plot(xs, [r.get(key, np.nan) for r in mine], "o-", label=family)
    trtr = np.mean([r["trtr_accuracy"] for r in rows])
    axes[0].axhline(trtr, color="grey", ls="--", lw=1, label=f"train on real ({trtr:.2f})")
    axes[0].axhline(0.1, color="grey", ls=":", lw=1, label="chance")
    axes[0].set(ylabel="TSTR accuracy (real held-out)", ylim=(0, 1.02))
    axes[1].set(ylabel="Fréchet distance, CNN features (not FID)", ylim=(0, None))
    axes[2].set(ylabel="detector AUC (0.5 = indistinguishable)", ylim=(0.45, 1.02))
    for ax in axes:
        ax.set_xticks(range(len(ticks)), ticks)
        ax.legend(fontsize=8)
    fig.suptitle(f"Digits 8×8: privacy–utility ({report['epochs']} epochs, δ={report['delta']:g})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="dcgan,convvae")
    parser.add_argument("--epsilons", default="1,8,inf")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--n", type=int, default=1000, help="synthetic images per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "images.json")
    parser.add_argument("--plot", type=Path, default=HERE / "images.png")
    args = parser.parse_args(argv)
    import torch

    # Small nets: one thread is as fast alone and far faster on a shared machine.
    torch.set_num_threads(1)
    with one_thread():
        report = run(args.families.split(","), [float(e) for e in args.epsilons.split(",")],
                     args.epochs, args.n, args.seed, args.out)
    write_json(report, args.out)
    plot(report, args.plot)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
