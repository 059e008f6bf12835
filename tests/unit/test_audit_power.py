"""The audit's power: paired comparisons of a DP model's audit with its non-private control's."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tasks.audit import AuditConfig, audit_verdict
from tasks.audit_mia import loss_threshold_mia, mia_within_bound
from tasks.audit_power import audit_power, canary_difference, mia_difference, pairing_digest


def _scores(members, nonmembers, records="same records"):
    return {"members": list(members), "nonmembers": list(nonmembers), "records": records}


def test_attack_auc_matches_sklearn_and_a_memorizing_control_is_measurably_higher():
    rng = np.random.default_rng(0)
    m, n = rng.normal(2, 1, 600), rng.normal(2, 1, 200)
    # The control fits its members a little better, record by record.
    candidate = _scores(m, n)
    control = _scores(m - 0.35 + rng.normal(0, 0.2, 600), n + rng.normal(0, 0.2, 200))
    out = mia_difference(candidate, control, seed=1)
    y = np.r_[np.ones(600), np.zeros(200)]
    assert out["auc_candidate"] == pytest.approx(roc_auc_score(y, -np.r_[m, n]))
    assert out["auc_control"] == pytest.approx(
        roc_auc_score(y, -np.r_[control["members"], control["nonmembers"]]))
    assert 0 < out["difference_lower"] < out["difference"]


def test_the_same_model_twice_is_not_measurably_higher():
    rng = np.random.default_rng(0)
    same = _scores(rng.normal(2, 1, 300), rng.normal(2, 1, 100))
    out = mia_difference(same, same)
    assert out["difference"] == 0 and out["difference_lower"] <= 0


def test_noise_alone_rarely_reads_as_higher():
    # Two models that leak equally (independent noise on the same records): at the 5 % level
    # the one-sided bound should exclude zero in about 1 of 20 draws, not more than a few.
    higher = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        m, n = rng.normal(2, 1, 300), rng.normal(2, 1, 100)
        a = _scores(m + rng.normal(0, 0.3, 300), n + rng.normal(0, 0.3, 100))
        b = _scores(m + rng.normal(0, 0.3, 300), n + rng.normal(0, 0.3, 100))
        higher += mia_difference(a, b, n_resamples=500, seed=seed)["difference_lower"] > 0
    assert higher <= 3


def test_results_on_different_records_or_canaries_do_not_pair():
    with pytest.raises(ValueError, match="different records"):
        mia_difference(_scores([1.0], [2.0], "a"), _scores([1.0], [2.0], "b"))
    with pytest.raises(ValueError, match="canaries"):
        canary_difference({"exposure": [1.0, 2.0], "planted": "a"},
                          {"exposure": [1.0, 2.0], "planted": "b"})
    assert pairing_digest([[1, 2], [3]]) != pairing_digest([[1], [2, 3]])


def test_canaries_paired_by_secret():
    candidate = {"exposure": [0.7, 0.3, 1.0, 0.6, 2.1, 1.4, 1.0, 1.2, 1.8, 1.8], "planted": "s"}
    control = {"exposure": [7.7, 2.8, 9.0, 2.0, 3.9, 2.9, 1.2, 5.8, 2.4, 0.3], "planted": "s"}
    out = canary_difference(candidate, control)
    assert out["p_value"] < 0.01
    assert out["median_control"] > out["median_candidate"]
    assert canary_difference(candidate, candidate)["p_value"] == 1.0
    # Pairing matters: the control less exposed than the candidate is not "higher".
    assert canary_difference(control, candidate)["p_value"] > 0.5


def test_power_needs_both_measures_higher_and_says_which_is_not():
    rng = np.random.default_rng(0)
    m, n = rng.normal(2, 1, 400), rng.normal(2, 1, 150)
    exposures = [0.5, 1.0, 1.5, 0.2, 0.8, 1.1, 2.0, 0.4, 1.3, 0.9]
    candidate = {"audit": {"mia_scores": _scores(m, n),
                           "canary": {"exposure": exposures, "planted": "s"}}}
    control = {"audit": {"mia_scores": _scores(m - 0.5, n),
                         "canary": {"exposure": [e + 3 for e in exposures], "planted": "s"}}}
    power = audit_power(candidate, control)
    assert power["has_power"] and power["canary"]["higher"] and power["mia"]["higher"]
    assert power["summary"].startswith("the audit has power")
    flat = {"audit": {**control["audit"], "mia_scores": _scores(m, n)}}
    weak = audit_power(candidate, flat)
    assert not weak["has_power"] and weak["canary"]["higher"]
    assert "membership inference NOT measurably higher" in weak["summary"]
    assert not audit_power(candidate, {"audit": {}})["has_power"]


def test_mia_gate_holds_a_model_to_an_empirical_ceiling_when_epsilon_allows_anything():
    rng = np.random.default_rng(0)
    attack = loss_threshold_mia(rng.normal(1.6, 1, 1000), rng.normal(2, 1, 1000))
    check = mia_within_bound(attack, 8.0, 1e-5)
    assert check["within_bound"]  # ε = 8 allows an AUC of 0.9997
    verdict = audit_verdict({"mia": check}, AuditConfig())["mia"]
    assert verdict.startswith("fail: membership inference AUC, at its lower bound")
    assert audit_verdict({"mia": check}, AuditConfig(mia_auc_max=None))["mia"] == "pass"
    honest = mia_within_bound(loss_threshold_mia(rng.normal(2, 1, 1000),
                                                 rng.normal(2, 1, 1000)), 8.0, 1e-5)
    assert audit_verdict({"mia": honest}, AuditConfig())["mia"] == "pass"
