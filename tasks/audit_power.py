"""Power of the privacy audit: whether it tells the DP model from a non-private control trained
the same way. An audit that cannot flag the control says nothing about the DP model.

Both models are audited on the same canaries and the same member and non-member records, so
their results pair up; each test is paired and one-sided (the control leaks more).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from typing import Any

import numpy as np
from scipy import stats


def pairing_digest(items: list) -> str:
    """Which records or canaries, in which order, an audit scored: results pair only when
    equal. ``items``: JSON-serialisable (token id lists, texts)."""
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()


def _attack_auc(members: np.ndarray, nonmembers: np.ndarray, axis: int = -1) -> np.ndarray:
    """AUC of the loss-threshold attack (a lower loss says "member"), as the Mann–Whitney
    statistic over ranks: one sort per resample, where pairwise comparison would be n_m·n_n.
    Ties count one half, as in ``roc_auc_score``."""
    n_m, n_n = members.shape[axis], nonmembers.shape[axis]
    ranks = stats.rankdata(-np.concatenate([members, nonmembers], axis=axis), axis=axis)
    member_ranks = np.take(ranks, np.arange(n_m), axis=axis).sum(axis=axis)
    return (member_ranks - n_m * (n_m + 1) / 2) / (n_m * n_n)


def mia_difference(candidate: dict, control: dict, *, confidence: float = 0.95,
                   n_resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """How much better the loss attack does on the control than on the candidate.

    ``candidate``/``control``: ``{"members": losses, "nonmembers": losses, "records": digest}``
    of the same records. Members and non-members are resampled apart (they were drawn apart),
    each record keeping its pair of losses, and ``scipy.stats.bootstrap`` (BCa) gives the
    one-sided lower bound at ``confidence``. Keys: ``auc_candidate``, ``auc_control``,
    ``difference``, ``difference_lower``."""
    if candidate.get("records") != control.get("records"):
        raise ValueError("the two membership tests scored different records; their AUCs do "
                         "not pair (train both models on one split with one seed)")
    members = np.stack([np.asarray(candidate["members"]), np.asarray(control["members"])])
    nonmembers = np.stack([np.asarray(candidate["nonmembers"]),
                           np.asarray(control["nonmembers"])])

    # Resampled arrays arrive as [model, ..., record]: the pair of losses stays together.
    def statistic(m: np.ndarray, n: np.ndarray, axis: int = -1) -> np.ndarray:
        auc = _attack_auc(m, n, axis=axis)
        return auc[1] - auc[0]

    def lower(method: str) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(stats.bootstrap(
                (members, nonmembers), statistic, vectorized=True, axis=-1,
                n_resamples=n_resamples, confidence_level=confidence, alternative="greater",
                method=method, rng=np.random.default_rng(seed)).confidence_interval.low)

    # BCa's skew correction is undefined when every resample agrees (identical models).
    low = lower("BCa")
    low = low if math.isfinite(low) else lower("percentile")
    auc = _attack_auc(members, nonmembers)
    return {"auc_candidate": float(auc[0]), "auc_control": float(auc[1]),
            "difference": float(auc[1] - auc[0]),
            "difference_lower": low}


def canary_difference(candidate: dict, control: dict) -> dict[str, float]:
    """Whether the control's canaries are more exposed than the candidate's: Wilcoxon's
    signed-rank test over the canaries, paired (the same secrets were planted in both).
    ``candidate``/``control``: ``canary_exposures`` results. Keys: ``median_candidate``,
    ``median_control``, ``p_value`` (one-sided; exact for the usual few canaries)."""
    a, b = np.asarray(candidate["exposure"], float), np.asarray(control["exposure"], float)
    if candidate.get("planted") != control.get("planted") or a.shape != b.shape:
        raise ValueError("the control was not audited on the candidate's canaries; their "
                         "exposures do not pair")
    # All differences zero: nothing tells the two apart.
    p = 1.0 if not np.any(a != b) else float(stats.wilcoxon(b, a, alternative="greater").pvalue)
    return {"median_candidate": float(np.median(a)), "median_control": float(np.median(b)),
            "p_value": p}


# Membership attacks whose per-record scores pair up: result key → words for the summary.
# "mia" (−log_prob) where the family has a likelihood; the black-box ones on samples always.
ATTACKS = {"mia": "membership inference", "dcr": "distance-to-closest-record attack",
           "domias": "DOMIAS attack"}


def audit_power(candidate: dict, control: dict, *, alpha: float = 0.05,
                seed: int = 0) -> dict[str, Any]:
    """Compare the audits of a candidate and its non-private control (``evaluate`` results).

    Keys: ``canary`` and each of ``ATTACKS`` present in either audit (``<attack>_scores``:
    the paired comparisons, each with ``higher``: measurably higher for the control at level
    ``alpha``; an attack only one side ran is not higher), ``has_power``, ``summary``. The
    audit has power when the control's canaries (where planted) are measurably more exposed
    and its membership inference measurably higher: the log-prob attack where the family
    has one, else any black-box attack (the only membership tests a family without a
    likelihood allows)."""
    a, b = candidate.get("audit", {}), control.get("audit", {})
    out: dict[str, Any] = {"alpha": alpha}
    if "canary" in a and "canary" in b:
        out["canary"] = canary_difference(a["canary"], b["canary"])
        out["canary"]["higher"] = out["canary"]["p_value"] < alpha
    elif "canary" in a or "canary" in b:
        out["canary"] = {"higher": False}
    for attack in ATTACKS:
        key = f"{attack}_scores"
        if key in a and key in b:
            out[attack] = mia_difference(a[key], b[key], confidence=1 - alpha, seed=seed)
            out[attack]["higher"] = out[attack]["difference_lower"] > 0.0
        elif key in a or key in b:
            out[attack] = {"higher": False}
    membership = ["mia"] if "mia" in out else [k for k in ATTACKS if k in out]
    out["has_power"] = bool(membership) and any(out[k]["higher"] for k in membership) and (
        out.get("canary", {}).get("higher", True))
    out["summary"] = _summary(out)
    return out


def _summary(power: dict[str, Any]) -> str:
    parts = []
    if (c := power.get("canary")) is not None:
        parts.append(f"canary exposure {'' if c['higher'] else 'NOT '}measurably higher"
                     + (f" (median {c['median_control']:.2f} vs {c['median_candidate']:.2f} "
                        f"bits, p = {c['p_value']:.2g})" if "p_value" in c
                        else " (only one model was audited with canaries)"))
    for attack, words in ATTACKS.items():
        if (m := power.get(attack)) is None:
            continue
        parts.append(f"{words} {'' if m['higher'] else 'NOT '}measurably higher"
                     + (f" (AUC {m['auc_control']:.3f} vs {m['auc_candidate']:.3f}, difference "
                        f"{m['difference']:+.3f}, {1 - power['alpha']:.0%} lower bound "
                        f"{m['difference_lower']:+.3f})" if "difference" in m
                        else " (only one model was audited with it)"))
    verdict = "the audit has power" if power["has_power"] else "the audit's power is NOT shown"
    if not parts:
        return f"{verdict}: no paired results to compare"
    return f"{verdict}: the non-private control's " + "; ".join(parts)
