"""Membership inference held against the bound (ε, δ)-DP puts on it: the loss-threshold attack
and the hypothesis-testing ceiling on any attack's TPR and AUC, with sampling slack.

Pure functions over per-record losses (any attack's scores, lower = "member").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve


def _tpr_key(fpr: float) -> str:
    return f"tpr_at_fpr_{fpr:g}"


def loss_threshold_mia(member_losses: np.ndarray, nonmember_losses: np.ndarray,
                       fprs: Sequence[float] = (0.001, 0.01)) -> dict[str, float]:
    """The loss-threshold attack (Yeom et al. 2018): guess "member" when a record's loss is low.

    Keys: ``auc`` (0.5 = no better than a coin), ``tpr_at_fpr_<x>`` (the highest TPR of any
    threshold whose FPR is at most x), ``n_members``, ``n_nonmembers``. NaN losses are
    dropped; an infinite one (a record the model gives probability 0) ranks past every
    finite one, as the attack only ranks."""
    members = np.asarray(member_losses, dtype=float)
    nonmembers = np.asarray(nonmember_losses, dtype=float)
    members, nonmembers = members[~np.isnan(members)], nonmembers[~np.isnan(nonmembers)]
    if not members.size or not nonmembers.size:
        raise ValueError("membership inference needs member and non-member losses")
    y = np.r_[np.ones(members.size), np.zeros(nonmembers.size)]
    score = -stats.rankdata(np.r_[members, nonmembers])  # roc_curve refuses ±inf
    fpr, tpr, _ = roc_curve(y, score, drop_intermediate=False)
    out = {"auc": float(roc_auc_score(y, score)), "n_members": float(members.size),
           "n_nonmembers": float(nonmembers.size)}
    for x in fprs:
        out[_tpr_key(x)] = float(tpr[fpr <= x + 1e-12].max())
    return out


def unigram_log_prob(texts: Sequence[str | None]) -> np.ndarray:
    """[N] log-probability of each text under the public unigram word model: the sum over its
    words (``models.vocab.words``) of log f(w), f from wordfreq's English frequencies (the
    source of the text families' vocabulary, nothing from the private data), floored at
    ``_FLOOR`` for a word wordfreq does not know; 0 for a missing text.

    The reference of the calibrated membership attack: a record's log-likelihood under the
    model less its log-likelihood under a reference model of public data (Carlini et al. 2021,
    "Extracting Training Data from Large Language Models", §6.1; Watson et al. 2022, "On the
    Importance of Difficulty Calibration in Membership Inference Attacks"). How long a text
    is and how rare its words are move its likelihood under any model far more than
    membership does; the ratio leaves what the model learnt about the record itself."""
    from wordfreq import word_frequency

    from models.vocab import words

    cache: dict[str, float] = {}

    def log_f(word: str) -> float:
        if word not in cache:
            cache[word] = math.log(max(word_frequency(word.lower(), "en"), _FLOOR))
        return cache[word]

    return np.array([sum(log_f(w) for w in words(t)) if isinstance(t, str) else 0.0
                     for t in texts], dtype=float)


# Frequency given to a word wordfreq does not list (below its smallest, about 1e-8).
_FLOOR = 1e-9


def _tpr_bound(fpr: np.ndarray | float, epsilon: float, delta: float) -> np.ndarray:
    """Largest TPR any membership test can reach at ``fpr`` against an (ε, δ)-DP mechanism:
    the hypothesis-testing region of Kairouz, Oh & Viswanath 2015 (Thm 2.1),
    TPR ≤ min(1, e^ε·FPR + δ, 1 − e^−ε·(1 − δ − FPR))."""
    fpr = np.asarray(fpr, dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):
        linear = np.where(fpr > 0, math.exp(min(epsilon, 700.0)) * fpr, 0.0) + delta
    complement = 1.0 - math.exp(-epsilon) * (1.0 - delta - fpr)
    return np.clip(np.minimum(np.minimum(linear, complement), 1.0), 0.0, 1.0)


def dp_mia_bound(epsilon: float, delta: float,
                 fprs: Sequence[float] = (0.001, 0.01)) -> dict[str, float]:
    """The (ε, δ)-DP ceiling on ``tpr_at_fpr_<x>`` and on ``auc`` (area under the ceiling)."""
    e = math.exp(min(epsilon, 700.0))
    # The ceiling is a minimum of lines: exact under the trapezoid rule once its kinks are grid
    # points (the linear bound meets 1, the complement bound meets 1, the two meet).
    kinks = [(1 - delta) / e, 1 - delta, (1 - delta) / (1 + e)]
    grid = np.unique(np.clip(np.r_[np.linspace(0.0, 1.0, 1001), kinks], 0.0, 1.0))
    out = {"auc": float(np.trapezoid(_tpr_bound(grid, epsilon, delta), grid))}
    for x in fprs:
        out[_tpr_key(x)] = float(_tpr_bound(x, epsilon, delta))
    return out


def _clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    """One-sided (1 − alpha) exact binomial bounds (Clopper & Pearson 1934)."""
    lower = stats.beta.ppf(alpha, k, n - k + 1) if k > 0 else 0.0
    upper = stats.beta.ppf(1 - alpha, k + 1, n - k) if k < n else 1.0
    return float(lower), float(upper)


def mia_within_bound(result: dict[str, float], epsilon: float, delta: float,
                     n_members: int | None = None, n_nonmembers: int | None = None, *,
                     fprs: Sequence[float] = (0.001, 0.01),
                     confidence: float = 0.95) -> dict[str, Any]:
    """Whether a ``loss_threshold_mia`` result is consistent with (ε, δ)-DP.

    An honest model can still land above the ceiling by sampling noise, so each statistic is
    taken at its optimistic end before comparing: the TPR at its Clopper–Pearson lower bound
    against the ceiling at the FPR's upper bound, the AUC less z·SE (Hanley & McNeil 1982).
    The comparisons share ``confidence`` (Bonferroni). The members/non-members split must be
    random (train.split_holdout is) for the DP ceiling to apply. Keys ``within_bound`` (bool),
    ``violations`` (list of str), ``auc_lower``, ``auc_bound``, ``tpr_lower_at_fpr_<x>``,
    ``tpr_bound_at_fpr_<x>``."""
    n_m = int(n_members if n_members is not None else result["n_members"])
    n_n = int(n_nonmembers if n_nonmembers is not None else result["n_nonmembers"])
    alpha = (1.0 - confidence) / (len(fprs) + 1)
    bound = dp_mia_bound(epsilon, delta, fprs)
    privacy = f"(ε={epsilon:g}, δ={delta:g})"
    out: dict[str, Any] = {"violations": []}
    for x in fprs:
        tpr = result[_tpr_key(x)]
        tpr_low = _clopper_pearson(round(tpr * n_m), n_m, alpha)[0]
        fpr_high = _clopper_pearson(math.floor(x * n_n + 1e-9), n_n, alpha)[1]
        ceiling = float(_tpr_bound(fpr_high, epsilon, delta))
        out[f"tpr_lower_at_fpr_{x:g}"], out[f"tpr_bound_at_fpr_{x:g}"] = tpr_low, ceiling
        if tpr_low > ceiling:
            out["violations"].append(
                f"TPR {tpr:.4f} at FPR {x:g} (lower bound {tpr_low:.4f}) exceeds the {privacy} "
                f"ceiling {ceiling:.4f}")
    auc = result["auc"]
    # Hanley & McNeil (1982), eq. 2: SE of an AUC from its value and the two sample sizes.
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    se = math.sqrt(max(auc * (1 - auc) + (n_m - 1) * (q1 - auc**2)
                       + (n_n - 1) * (q2 - auc**2), 0.0) / (n_m * n_n))
    out["auc_lower"] = float(auc - stats.norm.ppf(1 - alpha) * se)
    out["auc_bound"] = bound["auc"]
    if out["auc_lower"] > out["auc_bound"]:
        out["violations"].append(f"AUC {auc:.4f} (lower bound {out['auc_lower']:.4f}) exceeds "
                                 f"the {privacy} ceiling {out['auc_bound']:.4f}")
    out["within_bound"] = not out["violations"]
    return out
