"""Replay of training text in synthetic records, next to held-out text as the baseline."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.neighbors import NearestNeighbors

# The generation filter's word n-grams, so that audit and filter mean the same by a copy; a plain
# set, as nothing here is stored (ReplayIndex.copies re-sorts its digests on every call).
from models.replay import _ngrams as word_ngrams


def _normalized(text: str) -> str:
    # Case and spacing changes do not hide a copy.
    return " ".join(text.casefold().split())


def _texts(texts: Iterable[object]) -> list[str]:
    return [t for t in texts if isinstance(t, str) and t.strip()]


def replay_stats(synthetic_texts: Sequence[object], train_texts: Sequence[object],
                 holdout_texts: Sequence[object], n: int = 8) -> dict[str, float]:
    """How much synthetic text copies training text, next to the same for held-out text.

    Held-out records are the baseline: real text that the model never saw shares as much with
    the training text as honest synthetic text should. Keys: ``exact_copies`` and
    ``exact_copy_rate`` (synthetic texts equal to a training text after case and spacing are
    normalized), ``unique_copies`` (those whose training text occurs once in training and never
    in the holdout: a copy of one person's record), ``holdout_exact_rate``;
    ``ngram_copy_rate`` and ``holdout_ngram_rate`` (texts sharing any ``n``-word sequence with
    the training text, word n-grams as models/replay.py's generation filter uses);
    ``dcr_median`` and ``holdout_dcr_median`` (distance to closest record: cosine distance of
    TF-IDF char 3–5-grams to the nearest training text, 0 = identical, 1 = nothing shared),
    ``holdout_dcr_p5``, ``closer_than_holdout_p5`` (share of synthetic texts strictly closer
    than the holdout's 5th percentile; ≈ 0.05 or less when nothing is copied);
    ``n_synthetic`` and ``n_invalid`` (None, non-text or blank, left out of every rate)."""
    synth, train, holdout = (_texts(synthetic_texts), _texts(train_texts),
                             _texts(holdout_texts))
    if not train or not holdout:
        raise ValueError("replay needs training and held-out texts")
    out = {"n_synthetic": float(len(synth)), "n_invalid": float(len(synthetic_texts) - len(synth))}
    counts = Counter(_normalized(t) for t in train)
    held = {_normalized(t) for t in holdout}
    norm = [_normalized(t) for t in synth]
    grams = {g for t in train for g in word_ngrams(t, n)}

    def rate(flags: list[bool]) -> float:
        return float(np.mean(flags)) if flags else math.nan

    out["exact_copies"] = float(sum(t in counts for t in norm))
    out["exact_copy_rate"] = out["exact_copies"] / len(synth) if synth else math.nan
    out["unique_copies"] = float(sum(counts.get(t) == 1 and t not in held for t in norm))
    out["holdout_exact_rate"] = rate([_normalized(t) in counts for t in holdout])
    out["ngram_copy_rate"] = rate([not grams.isdisjoint(word_ngrams(t, n)) for t in synth])
    out["holdout_ngram_rate"] = rate([not grams.isdisjoint(word_ngrams(t, n)) for t in holdout])

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True)
    neighbours = NearestNeighbors(n_neighbors=1, metric="cosine", algorithm="brute")
    neighbours.fit(vectorizer.fit_transform(train))
    held_dcr = neighbours.kneighbors(vectorizer.transform(holdout))[0][:, 0]
    synth_dcr = (neighbours.kneighbors(vectorizer.transform(synth))[0][:, 0] if synth
                 else np.array([]))
    out["holdout_dcr_median"] = float(np.median(held_dcr))
    out["holdout_dcr_p5"] = float(np.percentile(held_dcr, 5))
    out["dcr_median"] = float(np.median(synth_dcr)) if synth else math.nan
    out["closer_than_holdout_p5"] = rate(list(synth_dcr < out["holdout_dcr_p5"]))
    return out
