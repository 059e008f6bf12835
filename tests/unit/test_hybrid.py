"""The hybrid family: a table family for the structured columns, the text family prompted with
each row's values for the text, one composed ε, both parts saved and loaded."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from pydantic import ValidationError

from models import accounting, base
from models.base import Budget, FieldSpec, TableSpec
from models.hybrid import HybridConfig

SPEC = TableSpec((
    FieldSpec("product", "categorical", values=("Nimbus Phone", "Zenith Router")),
    FieldSpec("rating", "numeric", low=1, high=5, integer=True),
    FieldSpec("message", "text")))
CONFIG = {"table_family": "mst", "table": {"final_iters": 50},
          "text": {"vocab_k": 300, "embed": 8, "hidden": 16, "epochs": 3, "batch_size": 16,
                   "lr": 0.05, "max_words": 10}}


def _table(n: int = 48) -> pd.DataFrame:
    return pd.DataFrame([{"product": p, "rating": 1 + i % 5,
                          "message": f"my {p} stopped working after the update"}
                         for i, p in enumerate(["Nimbus Phone", "Zenith Router"] * (n // 2))])


@pytest.fixture(scope="module")
def model():
    gen = base.create("hybrid", CONFIG)
    gen.fit(_table(), SPEC, Budget(epsilon=6.0, prior=(accounting.gaussian(4.0),)), seed=0)
    return gen


def test_both_parts_compose_to_the_target(model):
    fit = model.fit_result
    table_fit, text_fit = model.table.fit_result, model.text.fit_result
    assert fit.events == [*table_fit.events, *text_fit.events]
    assert fit.epsilon <= 6.0 * 1.01
    # The table part kept to its share of what the prior left, the text part took the rest.
    spent = accounting.epsilon([accounting.gaussian(4.0)], 1e-5)
    assert table_fit.epsilon <= (spent + 0.25 * (6.0 - spent)) * 1.01 < fit.epsilon
    assert fit.params["table_epsilon"] == table_fit.epsilon
    assert fit.params["text_epsilon"] == pytest.approx(fit.epsilon, rel=0.02)
    assert fit.epsilon_check == pytest.approx(fit.epsilon, rel=0.1)


def test_rows_hold_conditions_and_repeat_with_the_seed(model):
    a = model.sample(20, seed=2, conditions={"product": "Zenith Router"})
    pd.testing.assert_frame_equal(a, model.sample(20, seed=2, conditions={"product":
                                                                          "Zenith Router"}))
    assert (a["product"] == "Zenith Router").all() and a["rating"].between(1, 5).all()
    assert a["message"].map(lambda t: isinstance(t, str)).all()


def test_log_prob_adds_both_parts(model):
    rows = _table(2)
    total = model.log_prob(rows)
    assert total.shape == (2,)
    assert total == pytest.approx(model.table.log_prob(rows[["product", "rating"]])
                                  + model.text.text_log_prob(rows))


def test_perplexity_is_the_text_parts_given_the_structured_values(model):
    rows = _table(8)
    assert model.perplexity(rows) == model.text.perplexity(rows)
    assert 1 < model.perplexity(rows) < math.inf


def test_save_load_round_trip_and_replay_check(model, tmp_path):
    model.save(tmp_path / "h")
    assert (tmp_path / "h" / "table" / base.FAMILY_FILE).is_file()
    assert (tmp_path / "h" / "text" / base.FAMILY_FILE).is_file()
    again = base.load(tmp_path / "h")
    pd.testing.assert_frame_equal(again.sample(8, seed=4), model.sample(8, seed=4))
    assert again.check({"message": "yes my Zenith Router stopped working after the update"}) \
        == "replay"


def test_non_private_fit_and_bad_configs():
    gen = base.create("hybrid", {**CONFIG, "text": {**CONFIG["text"], "epochs": 1}})
    fit = gen.fit(_table(), SPEC, Budget(enabled=False), seed=0)
    assert fit.epsilon == math.inf and fit.events == []
    with pytest.raises(ValidationError, match="table_family"):
        HybridConfig(table_family="dplstm")
    with pytest.raises(ValueError, match="text column"):
        base.create("hybrid", CONFIG).fit(_table()[["product", "rating"]],
                                          TableSpec(SPEC.fields[:2]), Budget(), seed=0)


def test_plan_states_what_fit_spends(model):
    budget = Budget(epsilon=6.0, prior=(accounting.gaussian(4.0),))
    plan = base.create("hybrid", CONFIG).plan(len(_table()), budget, SPEC)
    assert set(plan.parts) == {"table", "text"} and plan.parts["text"].dpsgd
    planned, fitted = plan.parts["text"].events, model.text.fit_result.events
    assert [e["kind"] for e in planned] == [e["kind"] for e in fitted] == ["zcdp", "gaussian"]
    assert planned[-1]["sigma"] == pytest.approx(fitted[-1]["sigma"], rel=0.01)
    assert planned[-1]["q"] == fitted[-1]["q"] and planned[-1]["steps"] == fitted[-1]["steps"]
    assert plan.epsilon == pytest.approx(model.fit_result.epsilon, rel=0.02)
