"""The reference-calibrated log-prob membership attack (tasks.audit_mia.unigram_log_prob,
tasks.evaluate_audit._loss_mia): the public unigram model's log-likelihood taken off the
model's, so a text's length and word rarity no longer hide what the model learnt."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from models.base import FieldSpec, TableSpec
from tasks.audit import AuditConfig
from tasks.audit_mia import unigram_log_prob
from tasks.evaluate_audit import _loss_mia


def test_unigram_log_prob_sums_word_log_frequencies():
    short, long_, rare = unigram_log_prob(["the order", "the order was late again",
                                           "the zyzzogeton"])
    assert long_ < short < 0  # more words: less likely
    assert rare < short  # an unknown word costs more than a common one
    assert unigram_log_prob([None, ""]).tolist() == [0.0, 0.0]


def _texts(n: int, rng: np.random.Generator) -> list[str]:
    words = ["the", "order", "arrived", "late", "please", "refund", "my", "phone", "thanks"]
    return [" ".join(rng.choice(words, size=rng.integers(3, 40))) for _ in range(n)]


@pytest.mark.parametrize("reference", ["unigram", "none"])
def test_calibration_finds_members_that_length_hides(reference):
    # A model that knows the unigram model and adds 1 nat to each member: the attack on −log p
    # alone ranks mostly by length (AUC near 0.5); the calibrated one sees the nat.
    rng = np.random.default_rng(0)
    members = pd.DataFrame({"message": _texts(200, rng)})
    nonmembers = pd.DataFrame({"message": _texts(200, rng)})
    known = set(members["message"])
    gen = SimpleNamespace(spec=TableSpec((FieldSpec("message", "text"),)), log_prob=lambda rows:
                          unigram_log_prob(rows["message"].tolist())
                          + np.array([1.0 if t in known else 0.0 for t in rows["message"]]))
    attack, losses = _loss_mia(gen, members, nonmembers, AuditConfig(mia_reference=reference))
    assert len(losses["members"]) == len(losses["nonmembers"]) == 200
    assert attack["reference"] == reference
    if reference == "unigram":
        assert attack["auc"] == 1.0
    else:
        assert attack["auc"] < 0.65
