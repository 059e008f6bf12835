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


def audit_power(candidate: dict, control: dict, *, alpha: float = 0.05,
                seed: int = 0) -> dict[str, Any]:
    """Compare the audits of a candidate and its non-private control (``evaluate`` results).

    Keys: ``canary`` and ``mia`` (the paired comparisons, each with ``higher``: measurably
    higher for the control at level ``alpha``), ``has_power`` (both higher), ``summary``."""
    a, b = candidate.get("audit", {}), control.get("audit", {})
    out: dict[str, Any] = {"alpha": alpha}
    if "canary" in a and "canary" in b:
        out["canary"] = canary_difference(a["canary"], b["canary"])
        out["canary"]["higher"] = out["canary"]["p_value"] < alpha
    if "mia_scores" in a and "mia_scores" in b:
        out["mia"] = mia_difference(a["mia_scores"], b["mia_scores"], confidence=1 - alpha,
                                    seed=seed)
        out["mia"]["higher"] = out["mia"]["difference_lower"] > 0.0
    out["has_power"] = all(out.get(k, {}).get("higher", False) for k in ("canary", "mia"))
    out["summary"] = _summary(out)
    return out


def _summary(power: dict[str, Any]) -> str:
    parts = []
    if (c := power.get("canary")) is not None:
        parts.append(f"canary exposure {'' if c['higher'] else 'NOT '}measurably higher "
                     f"(median {c['median_control']:.2f} vs {c['median_candidate']:.2f} bits, "
                     f"p = {c['p_value']:.2g})")
    if (m := power.get("mia")) is not None:
        parts.append(f"membership inference {'' if m['higher'] else 'NOT '}measurably higher "
                     f"(AUC {m['auc_control']:.3f} vs {m['auc_candidate']:.3f}, difference "
                     f"{m['difference']:+.3f}, {1 - power['alpha']:.0%} lower bound "
                     f"{m['difference_lower']:+.3f})")
    verdict = "the audit has power" if power["has_power"] else "the audit's power is NOT shown"
    if not parts:
        return f"{verdict}: no paired results to compare"
    return f"{verdict}: the non-private control's " + "; ".join(parts)
