"""Fidelity metrics on synthetic frames with a planted difference and without."""

import math

import numpy as np
import pandas as pd
import pytest

from tasks.errors import InputError
from tasks.fidelity import column_fidelity, detection_auc, tstr

CAT, NUM, TXT = ["product", "channel"], ["amount", "rating"], ["message"]
WORDS = {"a": ["battery", "charge", "power", "cable"], "b": ["screen", "pixel", "glass", "crack"],
         "c": ["refund", "invoice", "payment", "charge"]}
FILLER = ["the", "my", "it", "is", "was", "please", "help", "since", "today", "again"]


def records(n: int, seed: int, shift: float = 0.0, vocab: dict | None = None) -> pd.DataFrame:
    """Records whose amount, rating and message all depend on the product, as strings."""
    rng = np.random.default_rng(seed)
    vocab = vocab or WORDS
    product = rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2])
    base = pd.Series(product).map({"a": 10.0, "b": 20.0, "c": 30.0}).to_numpy()
    amount = base + rng.normal(0, 3, n) + shift
    rating = np.clip(np.round(base / 10 + rng.normal(0, 1, n)), 1, 5)
    length = {"a": 15, "b": 20, "c": 25}
    message = [" ".join(rng.choice(vocab[p] + FILLER, size=rng.integers(5, length[p])))
               for p in product]
    return pd.DataFrame({"product": product, "channel": rng.choice(["web", "mail"], size=n),
                         "amount": amount.round(2).astype(str), "rating": rating.astype(int),
                         "message": message})


def test_identical_frames_are_at_distance_zero():
    real = records(300, 0)
    out = column_fidelity(real, real.copy(), CAT, NUM, TXT)
    assert out["tvd.product"] == out["tvd.channel"] == 0.0
    assert out["ks.amount"] == out["ks_length.message"] == 0.0
    assert out["correlation_diff"] == pytest.approx(0.0, abs=1e-12)
    assert out["missing_diff.amount"] == 0.0


def test_disjoint_categories_are_at_distance_one_and_missing_is_a_category():
    real = records(200, 0)
    out = column_fidelity(real, real.assign(product="z"), CAT, NUM, TXT)
    assert out["tvd.product"] == pytest.approx(1.0)
    half_missing = real.assign(channel="web")
    half_missing.loc[: len(real) // 2 - 1, "channel"] = None
    out = column_fidelity(real.assign(channel="web"), half_missing, CAT, NUM, TXT)
    assert out["tvd.channel"] == pytest.approx(0.5)


def test_ks_detects_a_shifted_distribution_and_not_a_fresh_sample():
    real = records(2000, 0)
    assert column_fidelity(real, records(2000, 1), CAT, NUM, TXT)["ks.amount"] < 0.06
    assert column_fidelity(real, records(2000, 1, shift=5.0), CAT, NUM, TXT)["ks.amount"] > 0.2


def test_unparseable_and_missing_synthetic_values_are_counted_not_fatal():
    real = records(200, 0)
    synth = records(200, 1).astype(object)
    synth.loc[:49, "amount"] = "twelve"
    synth.loc[50:59, "amount"] = None
    synth.loc[:19, "message"] = None
    synth.loc[20:29, "rating"] = float("inf")
    out = column_fidelity(real, synth, CAT, NUM, TXT)
    assert out["missing_diff.amount"] == pytest.approx(0.3)
    assert out["missing_diff.rating"] == pytest.approx(0.05)
    assert out["missing_diff.message"] == pytest.approx(0.1)
    assert all(math.isfinite(out[k]) for k in ("ks.amount", "ks_length.message",
                                               "correlation_diff"))


def test_correlation_difference_sees_broken_dependence():
    real = records(1000, 0)
    same = column_fidelity(real, records(1000, 1), CAT, NUM, TXT)["correlation_diff"]
    shuffled = records(1000, 1)
    shuffled["amount"] = shuffled["amount"].sample(frac=1, random_state=0).to_numpy()
    broken = column_fidelity(real, shuffled, CAT, NUM, TXT)["correlation_diff"]
    assert same < 0.1
    assert broken > 0.2
    assert math.isnan(column_fidelity(real, real, CAT, ["amount"], [])["correlation_diff"])


def test_a_column_missing_from_either_frame_is_named():
    real = records(50, 0)
    with pytest.raises(InputError, match="rating"):
        column_fidelity(real, real.drop(columns="rating"), CAT, NUM, TXT)


def test_detection_auc_is_chance_for_one_distribution_and_high_for_two():
    real = records(300, 0)
    same = detection_auc(real, records(300, 1), CAT, NUM, TXT, seed=0)
    assert abs(same["auc"] - 0.5) < 0.1
    other = records(300, 1, shift=8.0, vocab={k: ["zebra", "quartz"] for k in WORDS})
    different = detection_auc(real, other, CAT, NUM, TXT, seed=0)
    assert different["auc"] > 0.9
    assert different["auc_structured"] > 0.9 and different["auc_text"] > 0.9
    assert detection_auc(real, other, CAT, NUM, TXT, seed=0) == different


def test_detection_balances_classes():
    out = detection_auc(records(400, 0), records(120, 1), CAT, NUM, TXT, seed=0)
    assert out["n_per_class"] == 120


def test_tstr_ratio_is_near_one_for_real_like_synthetic_data():
    train, test = records(600, 0), records(400, 2)
    out = tstr(train, records(600, 1), test, "product", CAT, NUM, TXT, seed=0)
    assert out["rf.real.accuracy"] > 0.8 and out["text.real.accuracy"] > 0.8
    assert out["rf.ratio.accuracy"] == pytest.approx(1.0, abs=0.1)
    assert out["text.ratio.macro_f1"] == pytest.approx(1.0, abs=0.1)


def test_tstr_ratio_falls_when_synthetic_labels_carry_no_signal():
    train, test = records(600, 0), records(400, 2)
    synth = records(600, 1)
    synth["product"] = synth["product"].sample(frac=1, random_state=0).to_numpy()
    out = tstr(train, synth, test, "product", CAT, NUM, TXT, seed=0)
    assert out["rf.ratio.accuracy"] < 0.8
    assert out["text.ratio.macro_f1"] < 0.6


def test_tstr_copes_with_one_synthetic_label_and_missing_labels():
    train, test = records(300, 0), records(200, 2)
    synth = records(300, 1).assign(product="a").astype(object)
    synth.loc[:99, "product"] = None
    out = tstr(train, synth, test, "product", CAT, NUM, TXT, seed=0)
    assert out["n_synth_labelled"] == 200
    assert out["rf.synth.accuracy"] == pytest.approx((test["product"] == "a").mean())
