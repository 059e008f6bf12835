"""Image evaluation and audit (issue 14) on a stand-in generator that draws real digits or
noise through the families' interface (models.base.Generator), so no family is trained."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models import images as img
from models.base import FieldSpec, FitResult, Generator, Proposal, TableSpec
from tasks.evaluate_images import (
    ImageEvaluateConfig,
    class_counts,
    detection_gate,
    evaluate_images,
    evaluation_report,
    frechet_distance,
)

LABELS = tuple(str(d) for d in range(10))
SPEC = TableSpec((FieldSpec("image", "image", shape=(8, 8, 1)),
                  FieldSpec("label", "categorical", values=LABELS)))
# Few CNN steps: these tests check the metrics' logic, not their precision.
FAST = ImageEvaluateConfig(steps=150, batch_size=64, synthetic_images=300)


def _digits() -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.datasets import load_digits

    d = load_digits()
    arr = np.round(d.images * 255 / 16).astype(np.uint8)[..., None]
    frame = img.to_frame(arr, d.target)
    return frame.iloc[:600].reset_index(drop=True), frame.iloc[1400:].reset_index(drop=True)


TRAIN, HOLDOUT = _digits()


class StandIn(Generator):
    """Draws images from ``pool`` (a frame of models.images) or uniform noise with random labels;
    ``only`` restricts the labels it draws (mode collapse)."""

    family = "stand_in"

    def __init__(self, pool: pd.DataFrame | None = None, only: tuple[str, ...] | None = None):
        super().__init__({})
        self.spec, self.pool, self.only = SPEC, pool, only
        self.fit_result = FitResult(epsilon=float("inf"), delta=0.0, accountant="none",
                                    mechanism="none", private=False)

    def _propose(self, n, seed, conditions):
        rng = np.random.default_rng(seed)
        if self.pool is not None:
            pool = self.pool if self.only is None else \
                self.pool[self.pool["label"].isin(self.only)]
            rows = [dict(r) for r in pool.sample(n, replace=True, random_state=seed)
                    .to_dict("records")]
        else:
            rows = [{"image": rng.integers(0, 256, (8, 8, 1), dtype=np.uint8),
                     "label": str(rng.integers(10))} for _ in range(n)]
        return Proposal(rows, [None] * n, [None] * n)


@pytest.fixture(scope="module")
def as_real() -> dict[str, float]:
    return evaluate_images(StandIn(TRAIN), TRAIN, HOLDOUT, 300, seed=0, cfg=FAST)


@pytest.fixture(scope="module")
def noise() -> dict[str, float]:
    return evaluate_images(StandIn(), TRAIN, HOLDOUT, 300, seed=0, cfg=FAST)


def test_real_as_synthetic_tstr_close_to_trtr_and_undetectable(as_real):
    assert as_real["eval.trtr_accuracy"] > 0.7  # 150 steps: a test, not the benchmark
    assert abs(as_real["eval.tstr_accuracy"] - as_real["eval.trtr_accuracy"]) < 0.1
    assert as_real["eval.detection_auc"] < 0.7
    assert as_real["eval.synthetic_images"] == 300 and as_real["eval.usable_rate"] == 1.0
    assert as_real["eval.label_agreement"] > 0.7
    assert min(as_real[f"eval.predicted_counts.{d}"] for d in LABELS) > 0


def test_noise_is_detected_and_teaches_nothing(noise, as_real):
    assert noise["eval.detection_auc"] > 0.97
    assert noise["eval.tstr_accuracy"] < 0.25  # chance is 0.10
    assert noise["eval.label_agreement"] < 0.25
    assert noise["eval.frechet_distance"] > 5 * as_real["eval.frechet_distance"]


def test_class_counts_show_mode_collapse():
    m = evaluate_images(StandIn(TRAIN, only=("3",)), TRAIN, HOLDOUT, 50, seed=1,
                        cfg=FAST.model_copy(update={"steps": 5}))
    assert m["eval.class_counts.3"] == 50
    assert all(m[f"eval.class_counts.{d}"] == 0 for d in LABELS if d != "3")
    assert sum(m[f"eval.predicted_counts.{d}"] for d in LABELS) == 50
    assert class_counts(["1", "x"], ["0", "1"]) == {"0": 0, "1": 1, "x": 1}


def test_detection_gate_refuses_above_threshold():
    cfg = ImageEvaluateConfig(max_detection_auc=0.9)
    assert detection_gate({"eval.detection_auc": 0.95}, cfg)["detection"].startswith(
        "fail: a CNN tells the samples from real images with AUC 0.950 > "
        "evaluate.max_detection_auc=0.9")
    assert detection_gate({"eval.detection_auc": 0.85}, cfg) == {"detection": "pass"}
    assert detection_gate({}, cfg)["detection"] == \
        "fail: not computed (no detection AUC was computed)"
    assert detection_gate({"eval.detection_auc": 1.0},
                          ImageEvaluateConfig(max_detection_auc=None)) == {}


def test_frechet_distance_zero_for_same_features_and_refuses_one_row():
    x = np.random.default_rng(0).normal(size=(200, 4))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(x, x + 2.0) == pytest.approx(16.0, rel=1e-6)
    with pytest.raises(ValueError, match="2\\+ images"):
        frechet_distance(x[:1], x)


def test_too_few_images_to_detect_is_reported_and_fails_the_gate():
    cfg = FAST.model_copy(update={"steps": 5})
    report = evaluation_report(StandIn(TRAIN), TRAIN, HOLDOUT, 5, seed=0, cfg=cfg)
    assert "eval.detection_auc" not in report["metrics"]
    assert report["not_computed"]["eval.detection_auc"].startswith("detection needs 10+")
    assert detection_gate(report["metrics"], cfg, report["not_computed"])["detection"] \
        .startswith("fail: not computed (detection needs 10+ images a side, got 397 real "
                    "and 5 synthetic)")


def test_black_box_audit_runs_beside_a_copying_control():
    from tasks.audit import AuditConfig
    from tasks.audit_images import audit_images, audit_metrics

    members = TRAIN.iloc[:60].reset_index(drop=True)
    # The "control" draws its own training images (a copier), the candidate other digits.
    result = audit_images(StandIn(HOLDOUT.iloc[100:]), StandIn(members), members,
                          HOLDOUT.iloc[:60], n=200, seed=0, audit=AuditConfig(mia_records=60))
    cand, ctrl = result["candidate"], result["control"]
    assert "mia_attack" not in cand and "white_box" not in cand  # no score of its own
    assert ctrl["dcr_attack"]["auc"] > 0.95 and cand["dcr_attack"]["auc"] < 0.75
    assert ctrl["verdict"]["dcr"].startswith("fail: distance-to-closest-record attack AUC")
    assert cand["verdict"]["dcr"] == "pass"
    assert result["power"]["dcr"]["higher"] and result["power"]["has_power"]
    metrics = audit_metrics(result)
    assert metrics["audit.power.has_power"] == 1.0 and "audit.control.dcr.auc" in metrics
