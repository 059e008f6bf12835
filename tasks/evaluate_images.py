"""Evaluate an image generator (issue 14): train-on-synthetic/test-on-real accuracy of a small
CNN with train-on-real as its ceiling, a Fréchet distance on that CNN's features, the AUC of a
real-vs-synthetic CNN detector (a release gate) and per-class sample counts (mode collapse).

Pure functions over uint8 arrays [N, H, W, C] and the frames of ``models.images``; the @task at
the bottom loads the model and the stage's NPZs, writes the result and logs it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from models import images as img
from tasks import tracking
from tasks.storage import write_json

log = logging.getLogger(__name__)


class ImageEvaluateConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Images drawn for every metric: one per held-out digit and more; the per-class counts of
    # 1,000 draws over 10 classes resolve a class share to about ±3 %.
    synthetic_images: int = Field(default=1000, ge=20, le=100_000)
    # Optimizer steps of each CNN (classifier, detector), batches of ``batch_size``, Adam at
    # lr 3e-3: a fixed count, so a metric's cost does not grow with the data and TSTR and TRTR
    # get equal training. On the digits (1,437 train, 360 held out) train-on-real accuracy
    # is 0.94 after 400 × 64, 0.97 after 400 × 128 (0.98 after 800 × 128, twice the cost):
    # about 1 CPU s a network.
    steps: int = Field(default=400, ge=1)
    batch_size: int = Field(default=128, ge=2)
    # Release gate: the detector's held-out AUC must not exceed this (None: no gate). The
    # default 1.0 refuses no model: on the digits every model benchmarks/images.py measured
    # (dcgan and convvae, 30 epochs, ε 1, 8 and non-private alike) is detected at AUC ≥ 0.999
    # — a CNN tells this size of CPU-trained generator's samples from real digits almost
    # always, so any lower default would refuse every model, DP or not, and a gate nothing
    # can pass says nothing. Set it (e.g. 0.9) for models whose samples should pass as real.
    max_detection_auc: float | None = Field(default=1.0, gt=0.5, le=1.0)


def _torch():
    import torch  # lazy: importing the stage module must not load torch

    return torch


def _net(channels: int, classes: int, width: int = 16, features: int = 64):
    """conv 3×3 (C→w) ReLU, max-pool 2, conv 3×3 (w→2w) ReLU, average pool to 2×2, linear
    (8w→``features``) ReLU — the penultimate features — then linear to ``classes``. The pools
    make any H, W ≥ 2 (8×8 digits to 64×64) end in the same 2×2 grid; pooling before the
    second conv keeps a step about 1 CPU ms for a batch of 64 digits."""
    nn = _torch().nn
    body = nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(8 * width, features), nn.ReLU())
    return nn.Sequential(body, nn.Linear(features, classes))


@contextmanager
def one_thread():
    """Torch on one intra-op thread for the block: these nets are too small to gain from
    more, and on a busy machine extra threads only contend (measured on the shared 2-core
    box: 100 steps in 6 s wall with one thread, 47 s with two)."""
    torch = _torch()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _tensor(images: np.ndarray):
    """[N, H, W, C] uint8 → [N, C, H, W] float in [0, 1]."""
    torch = _torch()
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def train_cnn(images: np.ndarray, targets: np.ndarray, classes: int, *, steps: int,
              batch_size: int, seed: int):
    """A ``_net`` trained by Adam (lr 3e-3) for ``steps`` minibatches drawn with replacement
    from ``images`` [N, H, W, C] uint8 with ``targets`` [N] ints in [0, classes). ValueError
    when there is no image. Deterministic in ``seed``."""
    torch = _torch()
    if len(images) == 0:
        raise ValueError("no images to train the CNN on")
    x, y = _tensor(images), torch.as_tensor(np.asarray(targets), dtype=torch.long)
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = _net(x.shape[1], classes)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(x), size=min(batch_size, len(x))))
        loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def _outputs(net, images: np.ndarray, features: bool = False,
             batch_size: int = 512) -> np.ndarray:
    """[N, classes] logits, or [N, 64] penultimate features, of ``images``."""
    torch = _torch()
    part = net[0] if features else net
    with torch.no_grad():
        return np.concatenate([part(_tensor(images[i:i + batch_size])).numpy()
                               for i in range(0, len(images), batch_size)])


def accuracy(net, images: np.ndarray, targets: np.ndarray) -> float:
    """Share of ``images`` the classifier labels as ``targets``."""
    return float((_outputs(net, images).argmax(1) == np.asarray(targets)).mean())


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` [N, d] and ``b`` [M, d]
    (Heusel et al. 2017's formula): |μa − μb|² + tr(Σa + Σb − 2(Σa^½ Σb Σa^½)^½), the
    trace of the root taken from the eigenvalues of the symmetric product (no complex
    round-off). ValueError with fewer than 2 rows on a side."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a Fréchet distance needs 2+ images a side, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0.0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


# Fewest images a side for a detector AUC that says something.
MIN_DETECTION = 10


def detection_auc(real: np.ndarray, synth: np.ndarray, *, steps: int, batch_size: int,
                  seed: int) -> float:
    """AUC of a CNN telling ``real`` from ``synth`` images ([N, H, W, C] uint8, one shape),
    on held-out halves: as many of each (the larger side subsampled), each side split in two,
    a detector trained on one half of both and scored on the other, both ways; the mean of the
    two held-out AUCs. 0.5: indistinguishable, 1.0: always told apart (the textbook's
    deepfake detection). ValueError under ``MIN_DETECTION`` images a side or on shapes that
    differ."""
    from sklearn.metrics import roc_auc_score

    if real.shape[1:] != synth.shape[1:]:
        raise ValueError(f"real images {real.shape[1:]} and synthetic {synth.shape[1:]} "
                         "differ in shape")
    m = min(len(real), len(synth))
    if m < MIN_DETECTION:
        raise ValueError(f"detection needs {MIN_DETECTION}+ images a side, got {len(real)} "
                         f"real and {len(synth)} synthetic")
    rng = np.random.default_rng([seed, 0xDE7])
    real, synth = real[rng.permutation(len(real))[:m]], synth[rng.permutation(len(synth))[:m]]
    halves = [np.arange(m) < m // 2, np.arange(m) >= m // 2]
    aucs = []
    for fold, (train, test) in enumerate((halves, halves[::-1])):
        x = np.concatenate([real[train], synth[train]])
        y = np.r_[np.ones(train.sum(), int), np.zeros(train.sum(), int)]
        net = train_cnn(x, y, 2, steps=steps, batch_size=batch_size, seed=seed + fold)
        logits = _outputs(net, np.concatenate([real[test], synth[test]]))
        score = logits[:, 1] - logits[:, 0]
        aucs.append(roc_auc_score(np.r_[np.ones(test.sum()), np.zeros(test.sum())], score))
    return float(np.mean(aucs))


def class_counts(labels: Sequence[str], declared: Sequence[str] | None) -> dict[str, int]:
    """Images drawn per label, every ``declared`` label listed (0 for a class the model never
    draws: mode collapse shows as zeros), then any other label seen."""
    seen = pd.Series([str(x) for x in labels], dtype=object).value_counts()
    names = list(declared or []) + sorted(set(seen.index) - set(declared or []))
    return {name: int(seen.get(name, 0)) for name in names}


def _label_field(model) -> tuple[str, tuple[str, ...] | None] | None:
    """(name, declared values) of the model's label column, None without one."""
    spec = getattr(model, "spec", None)
    if spec is None or img.LABEL not in spec.names:
        return None
    return img.LABEL, spec.field(img.LABEL).values


def evaluate_images(model, train_df: pd.DataFrame, holdout_df: pd.DataFrame, n: int,
                    seed: int, cfg: ImageEvaluateConfig | None = None) -> dict[str, float]:
    """The metrics of image generator ``model`` (a fitted ``models.base.Generator``).

    ``train_df``/``holdout_df``: frames of ``models.images`` (``image``, ``label``), the real
    images the model learnt and real ones it never saw; ``n`` images are drawn by
    ``model.draw(n, seed)`` (the generation draw loop). Keys: ``eval.synthetic_images``,
    ``eval.usable_rate`` (drawn images passing the draw's checks), ``eval.detection_auc``
    (``detection_auc``: held-out real vs drawn) and, when the model has a ``label``
    column: ``eval.tstr_accuracy`` (CNN trained on the drawn images and their labels, tested
    on the held-out ones), ``eval.trtr_accuracy`` (the same CNN trained on ``train_df``:
    the ceiling), ``eval.frechet_distance`` (between held-out and drawn images, on the
    64 penultimate features of that real-trained CNN: a Fréchet distance in the FID's
    manner, NOT the FID, which needs ImageNet Inception weights not available offline; its
    scale is this CNN's own), ``eval.class_counts.<label>`` (drawn labels per declared
    label), ``eval.predicted_counts.<label>`` (drawn images per label the real-trained CNN
    sees in them: mode collapse shows as zeros even when labels are drawn as asked) and
    ``eval.label_agreement`` (share whose seen label is their drawn one); ``eval.seconds``.
    A metric the data cannot support is absent; ``evaluation_report`` says why."""
    return evaluation_report(model, train_df, holdout_df, n, seed, cfg)["metrics"]


def evaluation_report(model, train_df: pd.DataFrame, holdout_df: pd.DataFrame, n: int,
                      seed: int, cfg: ImageEvaluateConfig | None = None) -> dict[str, Any]:
    """``{"metrics": evaluate_images's, "not_computed": {metric: why}}``: a metric that
    cannot be computed (no label column, too few images) is reported as such, never a crash
    after training spent the budget (issue 12)."""
    cfg = cfg or ImageEvaluateConfig()
    with one_thread():
        return _evaluate(model, train_df, holdout_df, n, seed, cfg)


def _evaluate(model, train_df: pd.DataFrame, holdout_df: pd.DataFrame, n: int, seed: int,
              cfg: ImageEvaluateConfig) -> dict[str, Any]:
    start = time.perf_counter()
    drawn = model.draw(n, seed)
    synth = model.frame(drawn.records)
    real_test = img.to_array(holdout_df)
    fake = img.to_array(synth) if len(synth) else np.zeros((0, *real_test.shape[1:]), np.uint8)
    out = {"eval.synthetic_images": float(len(fake)),
           "eval.usable_rate": len(fake) / drawn.generated if drawn.generated else math.nan}
    missing: dict[str, str] = {}

    def measure(key: str, compute) -> None:
        try:
            out[key] = compute()
        except ValueError as exc:  # too few images: the message gives the counts
            missing[key] = str(exc)

    train = dict(steps=cfg.steps, batch_size=cfg.batch_size)
    measure("eval.detection_auc", lambda: detection_auc(real_test, fake, **train, seed=seed))
    label = _label_field(model)
    if label is None:
        missing |= dict.fromkeys(("eval.tstr_accuracy", "eval.trtr_accuracy",
                                  "eval.frechet_distance"), "no label column to classify")
    elif not len(real_test):
        missing |= dict.fromkeys(("eval.tstr_accuracy", "eval.trtr_accuracy",
                                  "eval.frechet_distance"), "no held-out image")
    else:
        name, declared = label
        classes = list(declared) if declared else sorted(set(train_df[name].astype(str)))
        index = {c: i for i, c in enumerate(classes)}

        def codes(frame: pd.DataFrame) -> np.ndarray:
            return np.array([index.get(str(v), -1) for v in frame[name]])

        y_test = codes(holdout_df)
        real_net = train_cnn(img.to_array(train_df), codes(train_df), len(classes), **train,
                             seed=seed)
        out["eval.trtr_accuracy"] = accuracy(real_net, real_test, y_test)
        y_fake = codes(synth)
        keep = y_fake >= 0  # a label outside the declared set never trains the classifier
        measure("eval.tstr_accuracy", lambda: accuracy(train_cnn(
            fake[keep], y_fake[keep], len(classes), **train, seed=seed), real_test, y_test))
        measure("eval.frechet_distance", lambda: frechet_distance(
            _outputs(real_net, real_test, features=True), _outputs(real_net, fake, features=True)))
        out |= {f"eval.class_counts.{k}": float(v)
                for k, v in class_counts(synth[name].astype(str), declared).items()}
        if len(fake):
            # What the images show, by the real-trained CNN: a conditional family draws its
            # labels as asked, so only the content reveals a collapse onto few digits.
            seen = _outputs(real_net, fake).argmax(1)
            out["eval.label_agreement"] = float((seen == y_fake).mean())
            out |= {f"eval.predicted_counts.{k}": float(v) for k, v in class_counts(
                [classes[i] for i in seen], classes).items()}
    out["eval.seconds"] = time.perf_counter() - start
    return {"metrics": out, "not_computed": missing}


def detection_gate(metrics: dict[str, float], cfg: ImageEvaluateConfig,
                   not_computed: dict[str, str] | None = None) -> dict[str, str]:
    """``{"detection": "pass" | "fail: why"}``; no entry when the gate is off
    (``max_detection_auc`` None); a detection AUC that was not computed fails, saying why."""
    if cfg.max_detection_auc is None:
        return {}
    auc = metrics.get("eval.detection_auc")
    if auc is None or not math.isfinite(auc):
        why = (not_computed or {}).get("eval.detection_auc", "no detection AUC was computed")
        return {"detection": f"fail: not computed ({why})"}
    if auc > cfg.max_detection_auc:
        return {"detection": f"fail: a CNN tells the samples from real images with AUC "
                             f"{auc:.3f} > evaluate.max_detection_auc={cfg.max_detection_auc:g}"}
    return {"detection": "pass"}


@task(name="evaluate-images", cache_policy=NO_CACHE)
def evaluate_images_task(model_dir: str, train_path: str, holdout_path: str,
                         cfg: ImageEvaluateConfig, seed: int, out_dir: str,
                         run_id: str | None = None, prefix: str = "") -> dict[str, Any]:
    """Evaluate the model saved in ``model_dir`` against the canonical NPZs of its training
    and held-out images; ``evaluation_images.json`` in ``out_dir``; metrics (``prefix``
    before each key) to MLflow run ``run_id`` when given. Returns ``{"metrics",
    "not_computed", "gates"}``."""
    from models.base import load
    from tasks.images import load_canonical

    model = load(model_dir)
    result = evaluation_report(model, load_canonical(train_path), load_canonical(holdout_path),
                               cfg.synthetic_images, seed, cfg)
    metrics = result["metrics"]
    result["gates"] = detection_gate(metrics, cfg, result["not_computed"])
    write_json(result, Path(out_dir) / f"{prefix.replace('.', '_')}evaluation_images.json")
    if run_id is not None:
        tracking.log_metrics(run_id, {prefix + k: v for k, v in metrics.items()
                                      if math.isfinite(v)})
    get_run_logger().info(
        "%simages: TSTR %s (TRTR %s), detection AUC %s, detection gate %s", prefix,
        *(f"{metrics[k]:.3f}" if k in metrics else "not computed"
          for k in ("eval.tstr_accuracy", "eval.trtr_accuracy", "eval.detection_auc")),
        result["gates"].get("detection", "off"))
    return result


# flows/images.py finds the audit beside the evaluation (getattr(evaluate_images,
# "audit_images_task")); it lives in tasks.audit_images.
from tasks.audit_images import audit_images_task  # noqa: E402, F401
