"""Keyword guidance for a conditional text model: which words the texts of each structured value
use more (or less) than texts overall, released by the Gaussian mechanism and added to the
language model's next-word logits.

A bag-of-words product of experts, as PPLM's bag-of-words attribute model (Dathathri et al.
2020, "Plug and Play Language Models"), with the bag and its weights from a differentially
private histogram (the Gaussian mechanism, released under ρ-zCDP: Bun & Steinke 2016) instead
of a hand-written list. A DP-SGD language model trained for a few noisy steps barely ties its
words to its prompt; a count of which words appear with which value is a far cheaper signal to
release (one histogram, one noise draw) than the same tie learnt through gradients.
Written by hand: neither Opacus nor the DP-text libraries release such conditional counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def word_counts(prefixes: np.ndarray, texts: Sequence[Sequence[int]], n_values: int,
                eligible: np.ndarray, max_words: int) -> np.ndarray:
    """[n_values, V] counts: for each record and each of its structured tokens (``prefixes``
    [N, F], token index within the structured tokens), +1 for each distinct eligible word of
    its text (its first ``max_words`` distinct ones). ``eligible`` [V] bool. Adding or removing
    one record changes F · max_words cells by 1: L2 sensitivity √(F · max_words)."""
    counts = np.zeros((n_values, len(eligible)), dtype=np.float64)
    for prefix, text in zip(prefixes, texts, strict=True):
        seen = [w for w in dict.fromkeys(text) if eligible[w]][:max_words]
        if seen:
            counts[np.ix_(prefix, seen)] += 1.0
    return counts


def release(counts: np.ndarray, n_fields: int, max_words: int, rho: float,
            rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """``counts`` plus Gaussian noise of standard deviation σ = Δ₂ / √(2ρ), Δ₂ = √(F · K): the
    Gaussian mechanism under ρ-zCDP (Bun & Steinke 2016, Prop. 1.6). Returns (noisy counts, σ).
    ValueError for ρ ≤ 0."""
    if rho <= 0:
        raise ValueError(f"keyword guidance needs ρ > 0, got {rho}")
    sigma = math.sqrt(n_fields * max_words) / math.sqrt(2 * rho)
    return counts + rng.normal(0.0, sigma, counts.shape), sigma


def bias_table(noisy: np.ndarray, fields: Sequence[range], sigma: float, eligible: np.ndarray,
               *, shrink: float = 2.0, clip: float = 4.0) -> np.ndarray:
    """[n_values, V] log-ratio of how often a value's texts hold each word to how often they
    would if words were independent of the value, log((c + τ) / (E + τ)), τ = ``shrink`` · σ:
    counts small against the noise shrink to 0 (no bias either way); clipped to ±``clip``.

    ``fields``: each field's rows of ``noisy`` (its values). A value's expected count E is its
    share of the field's records (estimated from the words clearly above the noise in the
    field's total) times the word's total over the field; only post-processing of ``noisy``,
    so it costs no further privacy."""
    out = np.zeros_like(noisy)
    tau = shrink * sigma
    for rows in fields:
        c = noisy[rows.start : rows.stop]                                   # [S, V]
        total = c.sum(0)                                                    # [V]
        clear = eligible & (total > 3.0 * sigma * math.sqrt(len(rows)))
        if not clear.any():
            continue
        share = np.clip(c[:, clear].sum(1), 0.0, None)
        share = share / share.sum() if share.sum() > 0 else np.full(len(rows), 1 / len(rows))
        expected = np.clip(share[:, None] * total[None, :], 0.0, None)
        ratio = np.log((np.clip(c, 0.0, None) + tau) / (expected + tau))
        out[rows.start : rows.stop] = np.where(eligible[None, :], np.clip(ratio, -clip, clip),
                                               0.0)
    return out


def fit(prefixes: np.ndarray, texts: Sequence[Sequence[int]], fields: Sequence[range],
        eligible: np.ndarray, max_words: int, rho: float | None,
        rng: np.random.Generator) -> tuple[torch.Tensor, float]:
    """The [S, V] float32 bias table of records with structured tokens ``prefixes`` [N, F]
    (indices within the S structured tokens; ``fields``: each field's tokens) and word ids
    ``texts``, and the noise σ it was released with: ``word_counts`` → ``release`` under
    ρ-zCDP → ``bias_table``. ``rho`` None: exact counts (a non-private model), where a
    noise scale of ¼ (a pseudo-count of ½) stands in. ValueError for ρ ≤ 0."""
    n_values = fields[-1].stop
    counts = word_counts(prefixes, texts, n_values, eligible, max_words)
    sigma = 0.0
    if rho is not None:
        counts, sigma = release(counts, len(fields), max_words, rho, rng)
    table = bias_table(counts, fields, max(sigma, 0.25), eligible)
    return torch.tensor(table, dtype=torch.float32), sigma


class Coverage:
    """The guidance bias of a batch of rows while their texts are written: a word's positive
    bias holds until the text has used it once (so a product's name is steered into the text,
    not repeated), negative biases hold throughout; everything resets at each text's end."""

    def __init__(self, table: torch.Tensor, prefixes: torch.Tensor, weight: float, size: int):
        """``table`` [S, V], ``prefixes`` [B, F] structured token indices, ``size``: the
        logits' width (V plus the structured tokens, which get no bias)."""
        start = table[prefixes].sum(1) * weight                              # [B, V]
        self.start = torch.nn.functional.pad(start, (0, size - start.shape[1]))
        self.bias = self.start.clone()

    def step(self, token: torch.Tensor, eos: int) -> None:
        """After ``token`` [B] was written: drop its positive bias; reset the rows that ended."""
        rows = torch.arange(len(token))
        self.bias[rows, token] = self.bias[rows, token].clamp(max=0.0)
        ended = token == eos
        self.bias[ended] = self.start[ended]
