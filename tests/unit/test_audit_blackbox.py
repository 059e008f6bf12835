"""Black-box membership inference on samples (distance to closest record, DOMIAS): it flags a
generator that copies its members, stays at chance for one that does not, and its scores feed
the DP-bound verdict and the power test as the log-prob attack's do."""

import numpy as np
import pandas as pd
import pytest

from models.base import FieldSpec
from tasks.audit import AuditConfig, audit_verdict
from tasks.audit_blackbox import dcr_attack, domias_attack, encode, split_holdout
from tasks.audit_mia import mia_within_bound
from tasks.audit_power import audit_power

FIELDS = (FieldSpec("amount", "numeric", low=0, high=20),
          FieldSpec("score", "numeric", low=-6, high=6),
          FieldSpec("plan", "categorical", values=("basic", "plus", "pro")),
          FieldSpec("age", "numeric", low=18, high=90, integer=True, nullable=True),
          FieldSpec("note", "text"))


def _people(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 90, n).astype(float)
    age[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame({"amount": rng.gamma(2, 1.5, n), "score": rng.normal(0, 1.5, n),
                         "plan": rng.choice(["basic", "plus", "pro"], n, p=[.5, .3, .2]),
                         "age": age, "note": ["free text the attacks ignore"] * n})


MEMBERS, NONMEMBERS, REFERENCE = _people(300, 1), _people(300, 2), _people(300, 3)


def test_gower_distance_of_the_encoding():
    rows = pd.DataFrame({"amount": [0.0, 10.0], "score": [0.0, 0.0], "plan": ["basic", "pro"],
                         "age": [30.0, None], "note": ["a", "b"]})
    x = encode(rows, [f for f in FIELDS if f.kind != "text"])
    # Half the amount range, another plan, a missing age: (0.5 + 0 + 1 + 1·(30-18)/72 + 1) / 4
    # with the age's value and its missing flag each counting.
    gower = np.abs(x[0] - x[1]).sum() / 4
    assert gower == pytest.approx((0.5 + 0 + 1 + 12 / 72 + 1) / 4)
    # An out-of-range amount is clipped; an undeclared plan is a category of its own.
    odd = pd.DataFrame({"amount": [99.0], "score": [0.0], "plan": ["gold"], "age": [30.0]})
    y = encode(odd, [f for f in FIELDS if f.kind != "text"])
    assert y[0, 0] == 1.0 and np.abs(y[0] - x[0]).sum() / 4 == pytest.approx((1 + 1) / 4)


def test_copies_of_the_members_are_flagged_by_both_attacks():
    dcr, losses = dcr_attack(MEMBERS, NONMEMBERS, MEMBERS.copy(), FIELDS)
    assert dcr["auc"] > 0.99 and dcr["tpr_at_fpr_0.01"] > 0.9
    assert dcr["closer_than_holdout_p5"] > 0.9 and dcr["closer_to_member_share"] > 0.9
    assert len(losses["members"]) == 300 and max(losses["members"]) == 0.0
    domias, _ = domias_attack(MEMBERS, NONMEMBERS, MEMBERS.copy(), REFERENCE, FIELDS)
    assert domias["auc"] > 0.99 and domias["tpr_at_fpr_0.01"] > 0.9


def test_loosely_copied_members_are_still_flagged():
    rng = np.random.default_rng(4)
    loose = MEMBERS.assign(amount=MEMBERS.amount + rng.normal(0, 0.5, 300),
                           score=MEMBERS.score + rng.normal(0, 0.5, 300))
    assert dcr_attack(MEMBERS, NONMEMBERS, loose, FIELDS)[0]["auc"] > 0.75
    assert domias_attack(MEMBERS, NONMEMBERS, loose, REFERENCE, FIELDS)[0]["auc"] > 0.7


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_an_independent_sample_of_the_same_distribution_is_at_chance(seed):
    synth = _people(600, seed)
    dcr, _ = dcr_attack(MEMBERS, NONMEMBERS, synth, FIELDS)
    assert abs(dcr["auc"] - 0.5) < 0.08
    assert dcr["closer_than_holdout_p5"] < 0.15
    assert abs(dcr["closer_to_member_share"] - 0.5) < 0.1
    domias, _ = domias_attack(MEMBERS, NONMEMBERS, synth, REFERENCE, FIELDS)
    assert abs(domias["auc"] - 0.5) < 0.08


def test_too_few_records_or_no_structured_column_is_a_value_error_naming_counts():
    with pytest.raises(ValueError, match=r"needs at least 5 of each .* got 3 non-members"):
        dcr_attack(MEMBERS, NONMEMBERS.head(3), MEMBERS, FIELDS)
    with pytest.raises(ValueError, match="got 2 reference records"):
        domias_attack(MEMBERS, NONMEMBERS, MEMBERS, REFERENCE.head(2), FIELDS)
    with pytest.raises(ValueError, match="at least one structured column"):
        dcr_attack(MEMBERS, NONMEMBERS, MEMBERS, [FIELDS[-1]])


def test_unlisted_values_and_missing_bounds_come_from_the_frames_alike():
    loose = (FieldSpec("amount", "numeric"), FieldSpec("plan", "categorical"))
    dcr, _ = dcr_attack(MEMBERS, NONMEMBERS, MEMBERS.copy(), loose)
    assert dcr["auc"] > 0.99
    assert abs(dcr_attack(MEMBERS, NONMEMBERS, _people(600, 8), loose)[0]["auc"] - 0.5) < 0.08


def test_holdout_halves_are_disjoint_and_the_nonmembers_capped():
    held = _people(21, 9)
    outside, reference = split_holdout(held, limit=1000)
    assert len(outside) == 11 and len(reference) == 10
    assert not set(outside.index) & set(reference.index)
    assert len(split_holdout(held, limit=4)[0]) == 4


def _scores(losses: dict) -> dict:
    return {**losses, "records": "same members and non-members"}


def test_black_box_scores_give_a_verdict_and_the_power_of_the_audit():
    copy_dcr, copy_losses = dcr_attack(MEMBERS, NONMEMBERS, MEMBERS.copy(), FIELDS)
    fair_dcr, fair_losses = dcr_attack(MEMBERS, NONMEMBERS, _people(600, 10), FIELDS)
    audit = AuditConfig()
    leaky = audit_verdict({"dcr": mia_within_bound(copy_dcr, 1.0, 1e-5)}, audit)["dcr"]
    assert leaky.startswith("fail: TPR") and "distance-to-closest-record attack AUC" in leaky
    assert audit_verdict({"dcr": mia_within_bound(fair_dcr, 1.0, 1e-5)}, audit) == {
        "dcr": "pass"}
    candidate = {"audit": {"dcr_scores": _scores(fair_losses)}}
    control = {"audit": {"dcr_scores": _scores(copy_losses)}}
    power = audit_power(candidate, control)
    assert power["has_power"] and power["dcr"]["higher"]
    assert "distance-to-closest-record attack measurably higher" in power["summary"]
    assert not audit_power(candidate, candidate)["has_power"]
    # Where the family has a likelihood, its log-prob attack must show the power.
    flat = {"members": [1.0] * 300, "nonmembers": [1.0] * 300}
    with_mia = audit_power({"audit": {**candidate["audit"], "mia_scores": _scores(flat)}},
                           {"audit": {**control["audit"], "mia_scores": _scores(flat)}})
    assert not with_mia["has_power"] and with_mia["dcr"]["higher"]
