"""Privacy audit: canary exposure, membership inference against the DP ceiling, replay."""

import math
import re

import numpy as np
import pydantic
import pytest

from tasks.audit import AuditConfig, audit_verdict, canary_exposures, exposure, make_canaries
from tasks.audit_mia import dp_mia_bound, loss_threshold_mia, mia_within_bound
from tasks.audit_replay import replay_stats

SPACE = 1e9


# --- Canaries and exposure.

def test_canaries_have_the_format_and_candidates_exclude_them():
    rng = np.random.default_rng(0)
    canaries = make_canaries(20, rng, template="ref {secret}.", digits=6)
    assert len(set(canaries.secrets)) == 20
    assert all(re.fullmatch(r"ref \d{6}\.", t) for t in canaries.texts)
    candidates = canaries.candidates(500, rng)
    assert len(candidates) == 500
    assert all(len(c) == len(canaries.texts[0]) for c in candidates)
    assert not set(candidates) & set(canaries.texts)
    assert canaries.space_size == 1e6


def test_exposure_of_the_best_scored_canary_hits_the_sample_ceiling_and_fit_goes_past_it():
    candidates = np.random.default_rng(0).normal(10.0, 1.0, size=999)
    assert exposure(0.0, candidates, SPACE) == pytest.approx(math.log2(1000))
    fitted = exposure(0.0, candidates, SPACE, method="skewnorm")
    assert math.log2(1000) + 5 < fitted <= math.log2(SPACE)
    assert exposure(-1e6, candidates, SPACE, method="normal") == pytest.approx(math.log2(SPACE))


def test_exposure_of_a_median_canary_is_about_one_bit():
    candidates = np.random.default_rng(0).normal(10.0, 1.0, size=999)
    median = float(np.median(candidates))
    for method in ("sample", "skewnorm", "normal"):
        assert exposure(median, candidates, SPACE, method=method) == pytest.approx(1.0, abs=0.1)
    assert exposure(100.0, candidates, SPACE) == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(exposure(float("nan"), candidates, SPACE))


def _secret(text: str) -> int:
    return int(re.search(r"\d{9}", text).group())


def _unmemorized(texts: list[str]) -> np.ndarray:
    # A log-perplexity that depends on the text alone, the same for canaries and candidates.
    return np.array([np.random.default_rng(_secret(t)).normal(30.0, 2.0) for t in texts])


def test_canary_exposures_flag_memorized_canaries_only():
    rng = np.random.default_rng(1)
    canaries = make_canaries(5, rng)
    cfg = AuditConfig(n_candidates=300)
    honest = canary_exposures(_unmemorized, canaries, 300, rng)
    assert honest["exposure_max"] < honest["resolution_bits"]
    assert honest["exposure_median"] < 4
    assert audit_verdict({"canary": honest}, cfg) == {"canary": "pass"}

    memorized = {_secret(t) for t in canaries.texts[:2]}

    def leaky(texts: list[str]) -> np.ndarray:
        return np.where([_secret(t) in memorized for t in texts], 5.0, _unmemorized(texts))

    leaked = canary_exposures(leaky, canaries, 300, rng)
    assert leaked["exposure"][:2] == [pytest.approx(math.log2(301))] * 2
    assert leaked["exposure_fit_max"] > 20
    verdict = audit_verdict({"canary": leaked}, cfg)["canary"]
    assert verdict.startswith("fail: max canary exposure 8.23 bits ≥ 8.23")


def test_canaries_each_a_little_more_likely_fail_as_a_set():
    """No canary tops every candidate, but all are favoured: the set test catches what a
    non-private model learnt from a few copies (about 4 bits median in the demo's control)."""
    rng = np.random.default_rng(2)
    canaries = make_canaries(10, rng)
    cfg = AuditConfig(n_candidates=1000)
    favoured = {_secret(t) for t in canaries.texts}

    def nudged(texts: list[str]) -> np.ndarray:  # 1.5 σ better than its own random draw
        return _unmemorized(texts) - np.where([_secret(t) in favoured for t in texts], 3.0, 0.0)

    leaked = canary_exposures(nudged, canaries, 1000, rng)
    assert leaked["exposure_median"] < 6 and leaked["memorization_p_value"] < 1e-3
    assert "more likely than chance" in audit_verdict({"canary": leaked}, cfg)["canary"]
    honest = canary_exposures(_unmemorized, canaries, 1000, rng)
    assert honest["memorization_p_value"] > 0.01
    assert audit_verdict({"canary": honest}, cfg) == {"canary": "pass"}


def test_canary_exposures_reject_a_score_fn_of_the_wrong_length():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="one score per text"):
        canary_exposures(lambda texts: np.zeros(3), make_canaries(2, rng), 50, rng)


# --- Membership inference and the DP ceiling.

def test_dp_bound_without_privacy_loss_is_the_diagonal():
    bound = dp_mia_bound(0.0, 0.0, fprs=(0.001, 0.1, 0.5))
    assert bound["auc"] == pytest.approx(0.5)
    assert [bound[f"tpr_at_fpr_{x:g}"] for x in (0.001, 0.1, 0.5)] == pytest.approx(
        [0.001, 0.1, 0.5])


def test_dp_bound_matches_the_closed_form_at_epsilon_one():
    e = math.e
    kink = 1 / (1 + e)  # where e^ε·x meets 1 − e^−ε·(1 − x)
    auc = e * kink**2 / 2 + (1 - kink) - (1 - kink) ** 2 / (2 * e)
    bound = dp_mia_bound(1.0, 0.0)
    assert bound["auc"] == pytest.approx(auc, abs=1e-9)
    assert bound["tpr_at_fpr_0.001"] == pytest.approx(e * 0.001)
    assert dp_mia_bound(1.0, 1e-3)["tpr_at_fpr_0.001"] == pytest.approx(e * 0.001 + 1e-3)
    assert dp_mia_bound(math.inf, 0.0)["auc"] == pytest.approx(1.0)


def test_loss_threshold_attack_is_chance_on_one_distribution_and_strong_on_two():
    rng = np.random.default_rng(0)
    same = loss_threshold_mia(rng.normal(2, 1, 2000), rng.normal(2, 1, 2000))
    assert same["auc"] == pytest.approx(0.5, abs=0.04)
    assert same["tpr_at_fpr_0.01"] < 0.04
    separated = loss_threshold_mia(rng.normal(0, 1, 2000), rng.normal(4, 1, 2000))
    assert separated["auc"] > 0.99
    assert separated["tpr_at_fpr_0.001"] > 0.5
    assert separated["n_members"] == 2000


def test_separated_losses_break_the_epsilon_one_ceiling():
    rng = np.random.default_rng(0)
    result = loss_threshold_mia(rng.normal(0, 1, 1000), rng.normal(3, 1, 1000))
    check = mia_within_bound(result, 1.0, 1e-5)
    assert not check["within_bound"]
    assert len(check["violations"]) == 3
    assert "ceiling" in check["violations"][-1]
    assert audit_verdict({"mia": check}, AuditConfig())["mia"].startswith("fail: TPR")
    assert mia_within_bound(result, math.inf, 1e-5)["within_bound"]


def test_sampling_noise_alone_does_not_fail_an_honest_model():
    # Same-distribution losses are what a perfectly private model gives; even held to ε = 0
    # their empirical TPR at 0.1 % FPR (a handful of records) must not read as a violation.
    failures = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        result = loss_threshold_mia(rng.normal(2, 1, 500), rng.normal(2, 1, 500))
        failures += not mia_within_bound(result, 0.0, 0.0)["within_bound"]
    assert failures <= 2


# --- Replay.

VOCAB = [f"w{i}" for i in range(300)]


def _texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(VOCAB, size=rng.integers(12, 25))) for _ in range(n)]


def test_clean_synthetic_text_shows_no_replay():
    train, holdout, synth = _texts(300, 0), _texts(100, 1), _texts(100, 2)
    out = replay_stats(synth, train, holdout, n=8)
    assert out["exact_copies"] == out["unique_copies"] == 0
    assert out["ngram_copy_rate"] == out["holdout_ngram_rate"] == 0
    assert out["dcr_median"] == pytest.approx(out["holdout_dcr_median"], abs=0.05)
    assert out["closer_than_holdout_p5"] < 0.15
    assert audit_verdict({"replay": out}, AuditConfig()) == {"replay": "pass"}


def test_planted_copy_and_planted_ngram_are_found():
    train, holdout, synth = _texts(300, 0), _texts(100, 1), _texts(98, 2)
    copied = "  " + train[7].upper() + " "
    borrowed = "x1 x2 " + " ".join(train[9].split()[2:10]) + " x3"
    out = replay_stats([*synth, copied, borrowed, None, "  "], train, holdout, n=8)
    assert out["n_synthetic"] == 100 and out["n_invalid"] == 2
    assert out["exact_copies"] == out["unique_copies"] == 1
    assert out["ngram_copy_rate"] == pytest.approx(0.02)
    assert out["closer_than_holdout_p5"] >= 0.01
    verdict = audit_verdict({"replay": out}, AuditConfig(replay_ngram_excess_max=0.0))["replay"]
    assert verdict.startswith("fail: 1 synthetic records copy a training record")
    assert "n-gram copy rate 0.020" in verdict


def test_copies_of_common_text_are_not_unique_copies():
    common = "thanks for the quick help"
    train, holdout = [*_texts(100, 0), common], [*_texts(50, 1), common]
    out = replay_stats([common], train, holdout, n=4)
    assert out["exact_copies"] == 1 and out["unique_copies"] == 0
    assert out["holdout_exact_rate"] == pytest.approx(1 / 51)


# --- Config and verdict.

def test_audit_config_rejects_bad_fields():
    with pytest.raises(pydantic.ValidationError, match="canary_template"):
        AuditConfig(canary_template="no placeholder")
    with pytest.raises(pydantic.ValidationError, match="raise n_candidates"):
        AuditConfig(n_candidates=100, exposure_max=12.0)
    with pytest.raises(pydantic.ValidationError, match="mia_fprs"):
        AuditConfig(mia_fprs=(0.0,))
    with pytest.raises(pydantic.ValidationError):
        AuditConfig(n_canary=3)
    assert AuditConfig(exposure_max=9.0).exposure_max == 9.0


def test_verdict_names_only_gates_with_results_and_uses_a_configured_exposure_limit():
    assert audit_verdict({}, AuditConfig()) == {}
    canary = {"exposure_max": 7.5, "exposure_median": 1.0, "exposure_fit_max": 9.0,
              "resolution_bits": 9.97, "space_bits": 29.9}
    assert audit_verdict({"canary": canary}, AuditConfig())["canary"] == "pass"
    assert audit_verdict({"canary": canary}, AuditConfig(exposure_max=7.0))["canary"].startswith(
        "fail: max canary exposure 7.50 bits ≥ 7.00")


def test_a_record_the_model_finds_impossible_ranks_last_instead_of_breaking_the_attack():
    attack = loss_threshold_mia([1.0, 2.0, math.inf], [3.0, math.inf, math.inf, np.nan])
    assert attack["n_nonmembers"] == 3
    # Pairs (member, non-member) the member wins, ties half: 3 + 3 + (0 + ½ + ½) = 7 of 9.
    assert attack["auc"] == pytest.approx((3 + 3 + 1.0) / 9)
