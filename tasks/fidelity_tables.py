"""Fidelity of a table's structured columns, the same yardstick for every generator and peer:
mean total-variation distance of all 1-way and 2-way marginals, and train-on-synthetic /
test-on-real ROC AUC of gradient boosting (issue 13's benchmark and the evaluate stage).

Also the value readers that ``tasks.fidelity`` shares: values may be strings, None or
unparseable, as a generative model writes them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OrdinalEncoder
from threadpoolctl import threadpool_limits

from tasks.errors import InputError

# Missing and unparseable categorical values are a category of their own: a model that writes
# None where the data has a value is less faithful, and TVD should say so.
MISSING = "<missing>"
# Numeric columns are cut at the real data's deciles for the marginal TVD (see ``bin_edges``).
BINS = 10


def check_columns(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise InputError(f"{name} frame lacks column(s) {absent}; pass only columns both have")


def category(v: object) -> str | None:
    if isinstance(v, str):
        return v
    return None if v is None or pd.isna(v) else str(v)


def categories(s: pd.Series) -> pd.Series:
    return s.map(lambda v: MISSING if (c := category(v)) is None else c)


def numbers(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce").astype(float).replace([np.inf, -np.inf], np.nan)


def bin_edges(real: pd.Series, bins: int = BINS) -> np.ndarray:
    """Inner cut points of a numeric column: the distinct ``1/bins … (bins-1)/bins`` quantiles
    of the REAL values (parseable ones). Bins are right-closed, ``(-inf, e1], (e1, e2], …,
    (e_k, inf)``, so a point mass (bank's ``pdays = -1``) keeps a bin of its own below the rest
    and synthetic values outside the real range land in the end bins. Empty when no value."""
    x = numbers(real).dropna().to_numpy()
    if not len(x):
        return np.empty(0)
    return np.unique(np.quantile(x, np.arange(1, bins) / bins))


def _binned(s: pd.Series, edges: np.ndarray) -> pd.Series:
    x = numbers(s)
    codes = np.searchsorted(edges, x.to_numpy(), side="left").astype(object)
    codes[x.isna().to_numpy()] = MISSING
    return pd.Series(codes, index=s.index)


def _codes(real: pd.Series, synth: pd.Series) -> tuple[np.ndarray, np.ndarray, int]:
    both = pd.concat([real, synth], ignore_index=True).astype(str)
    codes, uniques = pd.factorize(both)
    return codes[:len(real)], codes[len(real):], len(uniques)


def _tvd(a: np.ndarray, b: np.ndarray, size: int) -> float:
    # TVD = ½ Σ_x |p(x) − q(x)| over the joint support of both frames.
    p = np.bincount(a, minlength=size) / len(a)
    q = np.bincount(b, minlength=size) / len(b)
    return 0.5 * float(np.abs(p - q).sum())


def marginal_tvd(real: pd.DataFrame, synth: pd.DataFrame, columns: Sequence[str],
                 numeric: Sequence[str] = (), *, bins: int = BINS, way: int = 2) -> dict:
    """Total-variation distance between the real and synthetic ``way``-way marginals.

    ``columns``: the structured columns compared (categorical and numeric); ``numeric``: those
    of them binned at the real data's quantiles (``bin_edges``: ``bins`` quantile bins,
    right-closed, open-ended); missing or unparseable values are a value of their own
    (``MISSING``). ``way`` 1: every column's marginal; 2: every pair's joint marginal.
    Returns ``{"mean": float, "per": {"col" or "a|b": tvd}}``, 0 = same distribution,
    1 = disjoint supports. InputError: a column absent from a frame, an empty frame, a
    ``way`` other than 1 or 2, or way 2 with fewer than two columns.
    """
    columns = list(columns)
    check_columns(real, columns, "real")
    check_columns(synth, columns, "synthetic")
    if way not in (1, 2):
        raise InputError(f"marginal_tvd compares 1-way or 2-way marginals, not way={way}")
    if not len(real) or not len(synth):
        raise InputError(f"marginal_tvd needs records on both sides, got {len(real)} real "
                         f"and {len(synth)} synthetic")
    if way == 2 and len(columns) < 2:
        raise InputError("2-way marginals need at least two columns")
    codes: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
    for c in columns:
        if c in numeric:
            edges = bin_edges(real[c], bins)
            codes[c] = _codes(_binned(real[c], edges), _binned(synth[c], edges))
        else:
            codes[c] = _codes(categories(real[c]), categories(synth[c]))
    per: dict[str, float] = {}
    if way == 1:
        for c, (a, b, size) in codes.items():
            per[c] = _tvd(a, b, size)
    else:
        for c, d in combinations(columns, 2):
            (a1, b1, n1), (a2, b2, n2) = codes[c], codes[d]
            per[f"{c}|{d}"] = _tvd(a1 * n2 + a2, b1 * n2 + b2, n1 * n2)
    return {"mean": float(np.mean(list(per.values()))), "per": per}


def _booster(categorical: Sequence[str], numeric: Sequence[str], seed: int):
    # Native categorical splits on ordinal codes (at most 255 per column, HGB's bin limit;
    # rarer values share one code); unseen and missing values go to HGB's missing branch.
    # No early stopping: it would hold out 10 % of the training rows at random.
    encode = ColumnTransformer(
        [("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan,
                                encoded_missing_value=np.nan, max_categories=255),
          list(categorical)),
         ("num", "passthrough", list(numeric))])
    model = HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.1, early_stopping=False, random_state=seed,
        categorical_features=list(range(len(categorical))))
    return make_pipeline(encode, model)


def _features(frame: pd.DataFrame, categorical: Sequence[str],
              numeric: Sequence[str]) -> pd.DataFrame:
    parts = {c: categories(frame[c]).astype(object) for c in categorical}
    parts |= {c: numbers(frame[c]) for c in numeric}
    return pd.DataFrame(parts, index=frame.index)


def tstr_auc(train: pd.DataFrame, test_real: pd.DataFrame, label: str,
             categorical: Sequence[str], numeric: Sequence[str], *, seed: int = 0,
             positive: str | None = None) -> dict[str, float]:
    """ROC AUC and accuracy on ``test_real`` of gradient boosting (sklearn's
    HistGradientBoostingClassifier, native categorical splits) trained on ``train`` to
    predict ``label`` from the other ``categorical`` and ``numeric`` columns.

    ``train`` synthetic: train-on-synthetic, test-on-real (TSTR); ``train`` the real training
    split: the train-on-real ceiling, by the same code. Rows with no label are dropped.
    ``roc_auc``: with two labels in the test set, the AUC of ``positive`` (default: the rarer
    test label); with more, the mean one-vs-rest AUC over the test labels. A label the
    training set lacks scores 0; a training set of one label gives AUC 0.5. Deterministic in
    ``seed``. Keys ``roc_auc``, ``accuracy``, ``n_train``. InputError: a missing column, or
    no labelled test record.
    """
    categorical = [c for c in categorical if c != label]
    numeric = [c for c in numeric if c != label]
    columns = [*categorical, *numeric, label]
    check_columns(train, columns, "training")
    check_columns(test_real, columns, "real test")
    y_train, y_test = train[label].map(category), test_real[label].map(category)
    train, test_real = train[y_train.notna()], test_real[y_test.notna()]
    y_train = y_train.dropna().to_numpy(dtype=object)
    y_test = y_test.dropna().to_numpy(dtype=object)
    labels, counts = np.unique(y_test, return_counts=True)
    if not len(labels):
        raise InputError(f"no real test record has a value in label column {label!r}")
    out = {"n_train": float(len(y_train))}
    if len(np.unique(y_train)) < 2:
        # One label (or none) teaches only to predict it.
        out["accuracy"] = float(np.mean(y_test == y_train[0])) if len(y_train) else 0.0
        out["roc_auc"] = 0.5
        return out
    # One OpenMP thread: on a shared 2-core machine under load, HGB's default of one thread
    # per core ran 15× slower (18 s against 1.2 s for 3,000 rows), and one is reproducible.
    with threadpool_limits(limits=1, user_api="openmp"):
        model = _booster(categorical, numeric, seed).fit(
            _features(train, categorical, numeric), y_train)
        proba = model.predict_proba(_features(test_real, categorical, numeric))
    seen = list(model.classes_)
    out["accuracy"] = float(accuracy_score(y_test, model.classes_[proba.argmax(axis=1)]))
    targets = [positive or labels[np.argmin(counts)]] if len(labels) == 2 else list(labels)
    aucs = []
    for c in targets:
        score = proba[:, seen.index(c)] if c in seen else np.zeros(len(y_test))
        truth = y_test == c
        aucs.append(roc_auc_score(truth, score) if 0 < truth.sum() < len(truth) else math.nan)
    out["roc_auc"] = float(np.nanmean(aucs)) if not np.all(np.isnan(aucs)) else math.nan
    return out
