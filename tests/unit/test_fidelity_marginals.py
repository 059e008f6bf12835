"""The benchmark's yardstick: marginal TVD and gradient-boosting TSTR AUC on tiny frames."""

import numpy as np
import pandas as pd
import pytest

from tasks.errors import InputError
from tasks.fidelity import marginal_tvd, tstr_auc
from tasks.fidelity_tables import bin_edges

COLS, NUM = ["job", "balance", "y"], ["balance"]


def table(n: int, seed: int) -> pd.DataFrame:
    """Balance and label both follow the job: rich jobs have high balances and say yes."""
    rng = np.random.default_rng(seed)
    job = rng.choice(["admin", "manager", "student"], size=n, p=[0.5, 0.3, 0.2])
    rich = job == "manager"
    balance = np.where(rich, rng.normal(3000, 300, n), rng.normal(200, 100, n)).round()
    y = np.where(rng.random(n) < np.where(rich, 0.8, 0.1), "yes", "no")
    return pd.DataFrame({"job": job, "balance": balance, "y": y})


def test_identical_frames_have_zero_tvd_both_ways():
    real = table(400, 0)
    for way in (1, 2):
        out = marginal_tvd(real, real.sample(frac=1.0, random_state=1), COLS, NUM, way=way)
        assert out["mean"] == 0.0
    assert set(marginal_tvd(real, real, COLS, NUM, way=2)["per"]) == {
        "job|balance", "job|y", "balance|y"}


def test_shuffled_columns_keep_1way_but_lose_2way():
    real = table(2000, 0)
    rng = np.random.default_rng(3)
    shuffled = real.apply(lambda s: s.to_numpy()[rng.permutation(len(s))])
    one = marginal_tvd(real, shuffled, COLS, NUM, way=1)
    two = marginal_tvd(real, shuffled, COLS, NUM, way=2)
    assert one["mean"] == pytest.approx(0.0, abs=1e-12)
    assert two["mean"] > 0.1
    assert two["per"]["job|balance"] > two["per"]["balance|y"] > 0.0


def test_missing_and_out_of_range_values_count_as_distance():
    real = table(500, 0)
    synth = real.astype(object)
    synth.loc[:99, "job"] = None           # 20 % of jobs missing
    synth.loc[:49, "balance"] = "n/a"      # 10 % of balances unparseable
    out = marginal_tvd(real, synth, COLS, NUM, way=1)["per"]
    assert out["job"] == pytest.approx(0.2)
    assert out["balance"] == pytest.approx(0.1)
    beyond = real.assign(balance=real["balance"] + 1e6)
    assert marginal_tvd(real, beyond, COLS, NUM, way=1)["per"]["balance"] > 0.8


def test_bin_edges_keep_a_point_mass_apart():
    pdays = pd.Series([-1] * 80 + list(range(1, 21)))
    edges = bin_edges(pdays)
    assert edges[0] == -1 and len(edges) > 1
    real = pd.DataFrame({"pdays": pdays, "y": "no"})
    moved = real.assign(pdays=real["pdays"].where(real["pdays"] > 0, 0))  # -1 → 0
    assert marginal_tvd(real, moved, ["pdays"], ["pdays"], way=1)["mean"] == 0.8


def test_marginal_tvd_refuses_bad_arguments():
    real = table(50, 0)
    with pytest.raises(InputError, match="lacks column"):
        marginal_tvd(real, real.drop(columns="job"), COLS, NUM)
    with pytest.raises(InputError, match="way=3"):
        marginal_tvd(real, real, COLS, NUM, way=3)
    with pytest.raises(InputError, match="records on both sides"):
        marginal_tvd(real, real.iloc[:0], COLS, NUM)


def test_tstr_auc_learns_from_faithful_rows_and_not_from_noise():
    train, test = table(3000, 0), table(1000, 1)
    ceiling = tstr_auc(train, test, "y", ["job"], ["balance"], seed=0)
    assert ceiling["roc_auc"] > 0.8 and ceiling["accuracy"] > 0.8
    assert tstr_auc(train, test, "y", ["job"], ["balance"], seed=0) == ceiling  # deterministic
    noise = train.assign(y=np.random.default_rng(5).permutation(train["y"].to_numpy()))
    assert tstr_auc(noise, test, "y", ["job"], ["balance"], seed=0)["roc_auc"] < 0.65


def test_tstr_auc_with_one_label_or_a_multiclass_label():
    train, test = table(600, 0), table(300, 1)
    one = tstr_auc(train.assign(y="no"), test, "y", ["job"], ["balance"])
    assert one["roc_auc"] == 0.5 and one["accuracy"] == pytest.approx((test["y"] == "no").mean())
    multi = tstr_auc(train, test, "job", ["y"], ["balance"])
    assert multi["roc_auc"] > 0.7  # managers are told by their balance
    with pytest.raises(InputError, match="label column 'y'"):
        tstr_auc(train, test.assign(y=None), "y", ["job"], ["balance"])
