"""Keyword guidance: the released histogram's sensitivity and noise, the log-ratio table it
becomes, the coverage rule while sampling, and a DPLSTM steered towards its prompt's words."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from models import guidance
from models.base import Budget, FieldSpec, TableSpec
from models.dplstm import DPLSTM, DPLSTMConfig

ELIGIBLE = np.ones(6, dtype=bool)


def test_one_record_moves_at_most_fields_times_words_cells_by_one():
    prefixes = np.array([[0, 2], [1, 3]])
    texts = [[4, 5, 4, 1], [5]]
    with_both = guidance.word_counts(prefixes, texts, 4, ELIGIBLE, max_words=2)
    without = guidance.word_counts(prefixes[1:], texts[1:], 4, ELIGIBLE, max_words=2)
    diff = with_both - without
    # Record 0: distinct words 4, 5 (then 1, beyond max_words), in its two fields' rows.
    assert diff.sum() == 2 * 2 and set(np.unique(diff)) == {0.0, 1.0}
    assert diff[0, 4] == diff[0, 5] == diff[2, 4] == diff[2, 5] == 1 and diff[0, 1] == 0
    assert np.linalg.norm(diff) <= math.sqrt(2 * 2)


def test_release_noise_is_the_gaussian_mechanisms_for_rho():
    counts = np.zeros((50, 400))
    noisy, sigma = guidance.release(counts, n_fields=2, max_words=8, rho=0.5,
                                    rng=np.random.default_rng(0))
    assert sigma == pytest.approx(math.sqrt(16) / math.sqrt(1.0))
    assert noisy.std() == pytest.approx(sigma, rel=0.02)
    with pytest.raises(ValueError, match="ρ > 0"):
        guidance.release(counts, 2, 8, 0.0, np.random.default_rng(0))


def test_bias_favours_a_values_own_words_and_ignores_noise_sized_counts():
    # One field, two values with 500 records each: word 0 in every text of both (common),
    # word 1 only with value 0, word 2 only with value 1, word 3 three times (noise-sized).
    counts = np.array([[500.0, 480, 0, 3, 0, 0], [500, 0, 470, 0, 0, 0]])
    bias = guidance.bias_table(counts, [range(0, 2)], sigma=5.0, eligible=ELIGIBLE)
    assert bias[0, 1] > 0.5 and bias[1, 2] > 0.5          # own words pushed up
    assert bias[0, 2] < -0.5 and bias[1, 1] < -0.5        # the other value's words pushed down
    assert abs(bias[0, 0]) < 0.05 and abs(bias[0, 3]) < 0.2
    assert np.abs(bias).max() <= 4.0
    ineligible = guidance.bias_table(counts, [range(0, 2)], 5.0, np.zeros(6, dtype=bool))
    assert not ineligible.any()


def test_coverage_drops_a_used_words_push_and_resets_at_the_end_of_a_text():
    table = torch.tensor([[2.0, -1.0, 0.0], [0.0, 0.0, 3.0]])
    cov = guidance.Coverage(table, torch.tensor([[0], [1]]), weight=1.0, size=5)
    assert cov.bias.shape == (2, 5) and cov.bias[0, 0] == 2.0 and cov.bias[1, 2] == 3.0
    cov.step(torch.tensor([0, 1]), eos=4)
    assert cov.bias[0, 0] == 0.0 and cov.bias[0, 1] == -1.0     # used: its push is gone
    cov.step(torch.tensor([1, 4]), eos=4)
    assert cov.bias[0, 1] == -1.0                               # a pull stays
    assert cov.bias[1, 2] == 3.0                                # row 1 ended: reset


SPEC = TableSpec((FieldSpec("product", "categorical", values=("Nimbus Phone", "Zenith Router")),
                  FieldSpec("message", "text")))


def _tickets(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        product = ("Nimbus Phone", "Zenith Router")[i % 2]
        filler = " ".join(rng.choice(["please", "help", "water", "today", "order", "the"], 5))
        rows.append({"product": product,
                     "message": f"{filler} {'music' if i % 2 == 0 else 'money'} {filler}"})
    return pd.DataFrame(rows)


def test_guidance_steers_a_barely_trained_model_to_its_prompts_words():
    cfg = DPLSTMConfig(vocab_k=300, embed=8, hidden=16, epochs=1, batch_size=50, lr=0.01,
                       max_words=12, guidance_share=0.3, guidance_words=8,
                       guidance_weight=4.0)
    gen = DPLSTM(cfg)
    fit = gen.fit(_tickets(), SPEC, Budget(epsilon=8.0), seed=0)
    assert fit.epsilon <= 8.0 * 1.001
    rows = [{"product": p, "message": ""} for p in ("Nimbus Phone", "Zenith Router") * 100]

    def share(model, product, word):
        texts = [r["message"].lower().split() for r in model.complete(rows, seed=2)
                 if r["product"] == product]
        return np.mean([word in t for t in texts])

    assert share(gen, "Nimbus Phone", "music") > share(gen, "Zenith Router", "music") + 0.15
    assert share(gen, "Zenith Router", "money") > share(gen, "Nimbus Phone", "money") + 0.15
    unguided = DPLSTM(cfg.model_copy(update={"guidance_weight": 0.0}))
    unguided.spec, unguided.net = gen.spec, gen.net
    unguided._build_codes(gen.spec, gen.vocab)
    assert share(unguided, "Nimbus Phone", "music") < share(gen, "Nimbus Phone", "music")
