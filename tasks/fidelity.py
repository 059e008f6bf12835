"""Fidelity: how closely synthetic records match real ones, column by column, as a whole (can a
classifier tell them apart?) and for a downstream task (train on synthetic, test on real).

Pure functions over record frames; values may be strings, None or unparseable, as a generative
model writes them. Every result is a flat ``{name: float}`` dict, ready to log as metrics. The
marginal TVD and gradient-boosting TSTR AUC live in ``tasks.fidelity_tables``, imported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder

from tasks.errors import InputError
from tasks.fidelity_tables import MISSING as MISSING  # re-exported: one yardstick
from tasks.fidelity_tables import categories, category, check_columns, numbers
from tasks.fidelity_tables import marginal_tvd as marginal_tvd
from tasks.fidelity_tables import tstr_auc as tstr_auc


def _lengths(s: pd.Series) -> pd.Series:
    return s.map(lambda v: float(len(v)) if isinstance(v, str) else np.nan).astype(float)


def _structured(frame: pd.DataFrame, categorical: Sequence[str], numeric: Sequence[str],
                text: Sequence[str]) -> pd.DataFrame:
    """Categories as strings, numbers as floats (NaN when unparseable), text as its length."""
    parts = {c: categories(frame[c]) for c in categorical}
    parts |= {c: numbers(frame[c]) for c in numeric}
    parts |= {f"len.{c}": _lengths(frame[c]) for c in text}
    return pd.DataFrame(parts, index=frame.index)


def _joined_text(frame: pd.DataFrame, text: Sequence[str]) -> pd.Series:
    # A unit separator keeps one field's end from forming n-grams with the next field's start.
    return frame[list(text)].map(lambda v: v if isinstance(v, str) else "").agg(
        "\x1f".join, axis=1)


def column_fidelity(real: pd.DataFrame, synth: pd.DataFrame, categorical: list[str],
                    numeric: list[str], text: list[str]) -> dict[str, float]:
    """Per-column distances between real and synthetic marginals, and between correlations.

    Keys: ``tvd.<col>`` (total variation distance, 0 = same distribution, 1 = disjoint support),
    ``ks.<col>`` and ``ks_length.<col>`` (two-sample Kolmogorov–Smirnov statistic of a numeric
    column / of a text column's character length, over parseable values; NaN when a side has
    none), ``missing_diff.<col>`` (synthetic minus real share of missing or unparseable values,
    which KS cannot see), ``tvd_mean``, ``ks_mean`` and ``correlation_diff`` (mean absolute
    difference of the Pearson correlation matrices' off-diagonal entries over numeric columns
    and text lengths; NaN with fewer than two such columns).
    """
    columns = [*categorical, *numeric, *text]
    check_columns(real, columns, "real")
    check_columns(synth, columns, "synthetic")
    r, s = _structured(real, categorical, numeric, text), _structured(synth, categorical,
                                                                      numeric, text)
    out: dict[str, float] = {}
    for c in categorical:
        p = r[c].value_counts(normalize=True)
        q = s[c].value_counts(normalize=True)
        # TVD = ½ Σ_x |p(x) − q(x)| over the union of both supports.
        out[f"tvd.{c}"] = 0.5 * float(p.sub(q, fill_value=0.0).abs().sum()) if len(q) else 1.0
    continuous = [*numeric, *(f"len.{c}" for c in text)]
    for c in continuous:
        key = f"ks_length.{c[4:]}" if c.startswith("len.") else f"ks.{c}"
        a, b = r[c].dropna().to_numpy(), s[c].dropna().to_numpy()
        out[key] = float(ks_2samp(a, b).statistic) if len(a) and len(b) else math.nan
        out[f"missing_diff.{key.split('.', 1)[1]}"] = float(s[c].isna().mean()
                                                            - r[c].isna().mean())
    tvds = [v for k, v in out.items() if k.startswith("tvd.")]
    kss = [v for k, v in out.items() if k.startswith("ks") and not math.isnan(v)]
    out["tvd_mean"] = float(np.mean(tvds)) if tvds else math.nan
    out["ks_mean"] = float(np.mean(kss)) if kss else math.nan
    out["correlation_diff"] = _correlation_diff(r[continuous], s[continuous])
    return out


def _correlation_diff(real: pd.DataFrame, synth: pd.DataFrame) -> float:
    if real.shape[1] < 2:
        return math.nan
    # Pairwise-complete Pearson correlations; a constant column gives NaN entries, skipped.
    diff = (real.corr() - synth.corr()).abs().to_numpy()
    upper = diff[np.triu_indices_from(diff, k=1)]
    upper = upper[~np.isnan(upper)]
    return float(upper.mean()) if upper.size else math.nan


def _structured_model(categorical: Sequence[str], seed: int) -> Pipeline:
    # At most 32 one-hot columns per categorical; rarer values share an "infrequent" column.
    # A random forest rather than gradient boosting: as good a detector here, several times
    # faster on a shared CPU, and it takes the NaN of unparseable numbers as they come.
    onehot = OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=32,
                           sparse_output=False)
    encode = ColumnTransformer([("cat", onehot, list(categorical))], remainder="passthrough")
    return make_pipeline(encode, RandomForestClassifier(
        n_estimators=100, min_samples_leaf=2, random_state=seed, n_jobs=1))


def _hashed(texts: pd.Series):
    # Hashed character n-grams: stateless, so computed once for all folds, and no fitted
    # vocabulary to grow without bound on odd synthetic text.
    return HashingVectorizer(analyzer="char_wb", ngram_range=(3, 5), n_features=2**16,
                             alternate_sign=False, norm=None).transform(texts)


def _text_model(seed: int) -> Pipeline:
    # TF-IDF weighted n-gram counts into a linear model: a bag of n-grams stands in for a
    # sentence encoder, of which none is available offline. SAGA, because L-BFGS spends
    # seconds per fit on its bookkeeping over 2^16 × classes weights.
    return make_pipeline(TfidfTransformer(sublinear_tf=True),
                         LogisticRegression(C=1.0, solver="saga", max_iter=1000,
                                            random_state=seed))


def detection_auc(real: pd.DataFrame, synth: pd.DataFrame, categorical: list[str],
                  numeric: list[str], text: list[str], *, folds: int = 5,
                  max_records: int = 2000, seed: int = 0) -> dict[str, float]:
    """Cross-validated ROC AUC of classifiers told to tell real records from synthetic ones.

    ``real`` should be held-out records the generator never trained on, so the classifier
    cannot win by spotting memorized ones. Both sides are subsampled to the same size (at most
    ``max_records``) so the AUC is not skewed by class balance. Two models per fold: a random
    forest on one-hot categories, numbers and text lengths, and a linear model on hashed
    char n-grams of the text; their probabilities are averaged. Keys: ``auc`` (0.5 =
    indistinguishable, 1 = every record told apart), ``auc_std`` over folds,
    ``auc_structured``, ``auc_text`` (NaN without such features), ``n_per_class``.
    """
    columns = [*categorical, *numeric, *text]
    if not columns:
        raise InputError("detection needs at least one categorical, numeric or text column")
    check_columns(real, columns, "real")
    check_columns(synth, columns, "synthetic")
    n = min(len(real), len(synth), max_records)
    if n < folds:
        raise InputError(f"detection needs at least {folds} real and synthetic records, "
                         f"got {len(real)} and {len(synth)}")
    rng = np.random.default_rng(seed)
    both = pd.concat([real.iloc[rng.choice(len(real), n, replace=False)],
                      synth.iloc[rng.choice(len(synth), n, replace=False)]],
                     ignore_index=True)
    y = np.r_[np.zeros(n, dtype=int), np.ones(n, dtype=int)]
    structured = _structured(both, categorical, numeric, text)
    hashed = _hashed(_joined_text(both, text)) if text else None

    aucs: dict[str, list[float]] = {"auc": [], "auc_structured": [], "auc_text": []}
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splits.split(structured, y):
        probs = {}
        if structured.shape[1]:
            model = _structured_model(categorical, seed).fit(structured.iloc[train], y[train])
            probs["auc_structured"] = model.predict_proba(structured.iloc[test])[:, 1]
        if hashed is not None:
            model = _text_model(seed).fit(hashed[train], y[train])
            probs["auc_text"] = model.predict_proba(hashed[test])[:, 1]
        probs["auc"] = np.mean(list(probs.values()), axis=0)
        for key, p in probs.items():
            aucs[key].append(roc_auc_score(y[test], p))
    out = {k: float(np.mean(v)) if v else math.nan for k, v in aucs.items()}
    out["auc_std"] = float(np.std(aucs["auc"]))
    out["n_per_class"] = float(n)
    return out


def _fit_predict(model: Pipeline, x_train, y_train: np.ndarray, x_test) -> np.ndarray:
    # A synthetic set may hold a single label value; a classifier cannot be fitted on one
    # class, and always predicting it is what such a training set teaches.
    if len(np.unique(y_train)) < 2:
        return np.full(x_test.shape[0], y_train[0], dtype=object)
    return model.fit(x_train, y_train).predict(x_test)


def tstr(train_real: pd.DataFrame, synth: pd.DataFrame, test_real: pd.DataFrame, label: str,
         categorical: list[str], numeric: list[str], text: list[str] | None = None, *,
         seed: int = 0) -> dict[str, float]:
    """Train on synthetic, test on real (TSTR) against train on real, test on real (TRTR).

    Predicts the categorical ``label`` from the other fields (``label`` is dropped from
    ``categorical`` if listed) with a random forest on one-hot categories, numbers and text
    lengths (``rf``), and, when ``text`` is given, with a logistic regression on TF-IDF char
    n-grams of the text (``text``; a stand-in for sentence embeddings, none being available
    offline). Rows whose label is missing are dropped. Keys ``<model>.<real|synth>.<accuracy|
    macro_f1>`` and ``<model>.ratio.<metric>`` = synth / real (1 = synthetic data teaches the
    task as well as real data), and ``n_synth_labelled``. Macro-F1 averages over the labels of
    ``test_real`` only, so a label the synthetic data invents does not change the average.
    """
    text = list(text or [])
    categorical = [c for c in categorical if c != label]
    columns = [*categorical, *numeric, *text, label]
    for frame, name in ((train_real, "real training"), (synth, "synthetic"),
                        (test_real, "real test")):
        check_columns(frame, columns, name)
    frames = {}
    for name, frame in (("real", train_real), ("synth", synth), ("test", test_real)):
        y = frame[label].map(category)
        frames[name] = (frame[y.notna()], y[y.notna()].to_numpy(dtype=object))
    test, y_test = frames["test"]
    if not len(y_test) or not len(frames["real"][1]):
        raise InputError(f"no real record has a value in label column {label!r}")
    labels = np.unique(y_test)

    models: dict[str, tuple[Callable[[], Pipeline], Callable]] = {
        "rf": (lambda: _structured_model(categorical, seed),
               lambda f: _structured(f, categorical, numeric, text))}
    if text:
        models["text"] = (lambda: _text_model(seed), lambda f: _hashed(_joined_text(f, text)))
    out: dict[str, float] = {"n_synth_labelled": float(len(frames["synth"][1]))}
    for name, (make, features) in models.items():
        scores, x_test = {}, features(test)
        for source in ("real", "synth"):
            frame, y = frames[source]
            if not len(y):
                scores[source] = {"accuracy": math.nan, "macro_f1": math.nan}
                continue
            pred = _fit_predict(make(), features(frame), y, x_test)
            scores[source] = {
                "accuracy": float(accuracy_score(y_test, pred)),
                "macro_f1": float(f1_score(y_test, pred, labels=labels, average="macro",
                                           zero_division=0))}
        for metric in ("accuracy", "macro_f1"):
            real_score, synth_score = scores["real"][metric], scores["synth"][metric]
            out[f"{name}.real.{metric}"] = real_score
            out[f"{name}.synth.{metric}"] = synth_score
            out[f"{name}.ratio.{metric}"] = synth_score / real_score if real_score else math.nan
    return out
