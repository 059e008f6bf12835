"""Black-box membership inference on synthetic records, for every generator family (the only
attacks on one without a likelihood): distance to closest record and DOMIAS's density ratio.

Pure functions over record frames; each returns the attack's scores as "losses" (lower says
"member") so that ``audit_mia.loss_threshold_mia``, the DP-bound check and the paired power test
(``audit_power``) treat them as they treat a log-prob attack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from models.base import FieldSpec
from tasks.audit_mia import loss_threshold_mia

MISSING = "<missing>"
FLOOR = 1e-6
# Fewest records on each side below which an attack's AUC says nothing.
MIN_RECORDS = 5


def encode(frame: pd.DataFrame, fields: Sequence[FieldSpec]) -> np.ndarray:
    """[len(frame), width] the structured ``fields`` as numbers whose L1 distance divided by
    the field count is Gower's distance (Gower 1971): a numeric column range-scaled by its
    [low, high] (clipped) plus a missing indicator, a categorical column one-hot at ½ (a
    mismatch costs 1) over its values, a missing and an unlisted value each a category of
    their own. Text fields are left out (replay audits them). Fields without bounds or values
    take them from ``complete``. ValueError: no structured field."""
    parts = []
    for f in fields:
        if f.kind == "numeric":
            x = pd.to_numeric(frame[f.name], errors="coerce").astype(float).to_numpy()
            low, high = f.low or 0.0, f.high if f.high is not None else 1.0
            missing = ~np.isfinite(x)
            parts.append(np.clip(np.where(missing, 0.0, (x - low) / ((high - low) or 1.0)),
                                 0.0, 1.0))
            parts.append(missing.astype(float))
        elif f.kind == "categorical":
            index = {v: i for i, v in enumerate([*(f.values or ()), MISSING])}
            codes = [index.get(_category(v), len(index)) for v in frame[f.name]]
            onehot = np.zeros((len(frame), len(index) + 1))
            onehot[np.arange(len(frame)), codes] = 0.5
            parts.extend(onehot.T)
    if not parts:
        raise ValueError("the black-box attacks need at least one structured column")
    return np.column_stack(parts)


def complete(fields: Sequence[FieldSpec], frames: Sequence[pd.DataFrame]) -> list[FieldSpec]:
    """The structured ``fields``, a numeric one without declared bounds given the range of
    its values in ``frames``, a categorical one without a list given the values seen (one
    scale for every frame an attack compares)."""
    out = []
    for f in fields:
        if f.kind == "text":
            continue
        seen = pd.concat([frame[f.name] for frame in frames], ignore_index=True)
        if f.kind == "numeric" and (f.low is None or f.high is None):
            x = pd.to_numeric(seen, errors="coerce").astype(float)
            f = replace(f, low=f.low if f.low is not None else float(np.nan_to_num(x.min())),
                        high=f.high if f.high is not None else float(np.nan_to_num(x.max())))
        elif f.kind == "categorical" and f.values is None:
            f = replace(f, values=tuple(sorted({_category(v) for v in seen} - {MISSING})))
        out.append(f)
    return out


def _category(v: object) -> str:
    if isinstance(v, str):
        return v
    return MISSING if v is None or pd.isna(v) else str(v)


def _enough(members: pd.DataFrame, nonmembers: pd.DataFrame, synth: pd.DataFrame,
            attack: str, reference: pd.DataFrame | None = None) -> None:
    sides = {"members": members, "non-members": nonmembers, "synthetic records": synth}
    if reference is not None:
        sides["reference records"] = reference
    short = {k: len(v) for k, v in sides.items() if len(v) < MIN_RECORDS}
    if short:
        raise ValueError(f"{attack} needs at least {MIN_RECORDS} of each of "
                         f"{', '.join(sides)}; got "
                         + ", ".join(f"{n} {k}" for k, n in short.items()))


def _nearest(points: np.ndarray, queries: np.ndarray, fields: int) -> np.ndarray:
    return NearestNeighbors(n_neighbors=1, metric="manhattan").fit(points).kneighbors(
        queries)[0][:, 0] / fields


def dcr_attack(members: pd.DataFrame, nonmembers: pd.DataFrame, synth: pd.DataFrame,
               fields: Sequence[FieldSpec],
               fprs: Sequence[float] = (0.001, 0.01)) -> tuple[dict[str, float], dict]:
    """Distance to closest record: a member lies closer to some synthetic record than a
    non-member when the generator copies or hugs its training rows (e.g. Platzer & Reutterer
    2021; SDMetrics' DCR). Distance: Gower's, over ``encode``.

    Returns (result, losses). ``result``: ``loss_threshold_mia``'s keys for the attack
    "member when its distance to the nearest synthetic record is small" (``auc``,
    ``tpr_at_fpr_<x>``, ``n_members``, ``n_nonmembers``) plus ``member_dcr_median``,
    ``nonmember_dcr_median``; ``closer_than_holdout_p5``: share of synthetic records closer
    to their nearest member than the 5th percentile of the non-members' distance to their
    nearest member (real-to-real closeness; ≈ 0.05 or less when nothing is copied);
    ``closer_to_member_share``: share of synthetic records nearer a member than any
    non-member (≈ n_m/(n_m + n_n) when nothing is copied, ties split). ``losses``:
    ``{"members", "nonmembers"}`` distances (lists), for the paired power test.
    ValueError: fewer than ``MIN_RECORDS`` on a side, or no structured field."""
    _enough(members, nonmembers, synth, "the DCR attack")
    fields = complete(fields, [members, nonmembers, synth])
    m, n, s = encode(members, fields), encode(nonmembers, fields), encode(synth, fields)
    to_synth_m, to_synth_n = _nearest(s, m, len(fields)), _nearest(s, n, len(fields))
    result = loss_threshold_mia(to_synth_m, to_synth_n, fprs)
    s_to_m, s_to_n = _nearest(m, s, len(fields)), _nearest(n, s, len(fields))
    # Real-to-real: how close a record the generator never saw sits to a member.
    n_to_m = _nearest(m, n, len(fields))
    p5 = float(np.percentile(n_to_m, 5))
    result |= {"member_dcr_median": float(np.median(to_synth_m)),
               "nonmember_dcr_median": float(np.median(to_synth_n)),
               "holdout_dcr_p5": p5,
               "closer_than_holdout_p5": float(np.mean(s_to_m < p5)),
               "closer_to_member_share": float(np.mean((s_to_m < s_to_n)
                                                       + 0.5 * (s_to_m == s_to_n)))}
    return result, {"members": to_synth_m.tolist(), "nonmembers": to_synth_n.tolist()}


def domias_attack(members: pd.DataFrame, nonmembers: pd.DataFrame, synth: pd.DataFrame,
                  reference: pd.DataFrame, fields: Sequence[FieldSpec],
                  fprs: Sequence[float] = (0.001, 0.01)) -> tuple[dict[str, float], dict]:
    """DOMIAS (van Breugel, Sun, Qian & van der Schaar, AISTATS 2023): a record is a member
    when the synthetic data is denser around it than real data is, score(x) =
    p_synth(x) / p_ref(x), which sees a generator overfitting locally where distance alone
    flags every record of a dense region and misses an outlier copied loosely.
    ``reference``: real records the generator never saw, other than ``nonmembers``.

    Densities: the nearest-neighbour estimator (Loftsgaarden & Quesenberry 1965), p(x) =
    1 / (n·V_d·r(x)^d) with r the Gower distance to the nearest record, so log score =
    d·log(r_ref / r_synth) + log(n_ref / n_synth), ranked as log(r_ref / r_synth) whatever
    the dimension d. A Gaussian KDE (the paper's choice) on 200 synthetic records blurs the
    spikes the attack looks for: on synthetic records that copy the members it reached AUC
    0.62–0.78 over bandwidths and PCA sizes, this estimator 1.0.

    Returns (result, losses) as ``dcr_attack`` (losses: −log score) with
    ``loss_threshold_mia``'s keys. ValueError: fewer than ``MIN_RECORDS`` on a side, or no
    structured field."""
    _enough(members, nonmembers, synth, "the DOMIAS attack", reference)
    fields = complete(fields, [members, nonmembers, synth, reference])
    queries = np.vstack([encode(members, fields), encode(nonmembers, fields)])
    to_synth = _nearest(encode(synth, fields), queries, len(fields))
    to_ref = _nearest(encode(reference, fields), queries, len(fields))
    # An exact copy is at distance 0: a floor far below any distance between distinct values.
    loss = np.log(to_synth + FLOOR) - np.log(to_ref + FLOOR)  # −log p_synth/p_ref
    loss_m, loss_n = loss[: len(members)], loss[len(members):]
    return (loss_threshold_mia(loss_m, loss_n, fprs),
            {"members": loss_m.tolist(), "nonmembers": loss_n.tolist()})


def split_holdout(holdout: pd.DataFrame, limit: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(non-members, reference): the held-out records halved, the first half (at most
    ``limit``) the attacks' non-members, the second DOMIAS's reference sample, so that no
    record is both a query and part of the density it is measured against."""
    half = math.ceil(len(holdout) / 2)
    return holdout.iloc[:half].head(limit), holdout.iloc[half:]
