"""The DPLSTM text family: public vocabulary, record tokens, DP-SGD accounting, seeded sampling,
conditions, completion, likelihood, replay check and save/load, on a tiny table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models import accounting, base
from models.base import Budget, FieldSpec, TableSpec
from models.dplstm import DPLSTM, DPLSTMConfig
from models.vocab import Vocabulary, detokenize, words

SPEC = TableSpec((
    FieldSpec("product", "categorical", values=("Nimbus Phone", "Zenith Router"), nullable=True),
    FieldSpec("rating", "numeric", low=1, high=5, integer=True),
    FieldSpec("score", "numeric", low=0.0, high=1.0),
    FieldSpec("message", "text")))
SMALL = DPLSTMConfig(vocab_k=300, embed=8, hidden=16, epochs=3, batch_size=16, lr=0.05,
                     max_words=12, bins=4)


def _table(n: int = 48) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        product = ["Nimbus Phone", "Zenith Router", None][i % 3]
        text = (f"my {product} stopped working after the update" if product
                else "please call me back about my order")
        rows.append({"product": product, "rating": int(rng.integers(1, 6)),
                     "score": float(rng.random()), "message": text})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def model() -> DPLSTM:
    gen = DPLSTM(SMALL)
    gen.fit(_table(), SPEC, Budget(epsilon=4.0), seed=0)
    return gen


def test_vocabulary_is_public_and_keeps_released_case():
    vocab = Vocabulary.public(SPEC, 300)
    assert vocab.encode("My Nimbus Phone") == [vocab.index["my"], vocab.index["Nimbus"],
                                               vocab.index["Phone"]]
    assert vocab.encode("Xylophonequark") == [vocab.unk]
    assert vocab.encode("<PERSON> said") [0] == vocab.index["<PERSON>"]
    assert detokenize(words("i think it's fine . it costs 4 2 $")) == \
        "I think it's fine. It costs 42 $"


def test_private_fit_accounts_one_gaussian_within_the_target(model):
    fit = model.fit_result
    # The keyword-guidance histogram (zCDP) and DP-SGD (Gaussian), composed by one accountant.
    assert fit.private and [e["kind"] for e in fit.events] == ["zcdp", "gaussian"]
    assert fit.params["guidance_rho"] == fit.events[0]["rho"] > 0
    assert fit.epsilon <= 4.0 * 1.001 and fit.epsilon > 3.5
    assert fit.epsilon == pytest.approx(accounting.epsilon(fit.events, 1e-5), rel=1e-9)
    assert fit.epsilon_check == pytest.approx(fit.epsilon, rel=0.05)
    assert fit.params["vocabulary"].startswith("public (wordfreq top-300 + released values); "
                                               "which words go with which structured value: "
                                               "paid for")
    assert math.isfinite(fit.final_loss)


def test_plan_states_what_fit_spends(model):
    plan = DPLSTM(SMALL).plan(len(_table()), Budget(epsilon=4.0), SPEC)
    assert plan.dpsgd and plan.mechanism == model.fit_result.mechanism
    assert [e["kind"] for e in plan.events] == ["zcdp", "gaussian"]
    for planned, fitted in zip(plan.events, model.fit_result.events, strict=True):
        assert planned["kind"] == fitted["kind"]
        assert {k: v for k, v in planned.items() if k != "kind"} == pytest.approx(
            {k: v for k, v in fitted.items() if k != "kind"}, rel=1e-9)
    assert plan.epsilon == pytest.approx(model.fit_result.epsilon, rel=1e-9)


def test_prior_releases_shrink_what_dp_sgd_may_spend():
    prior = (accounting.gaussian(2.0),)
    gen = DPLSTM(SMALL.model_copy(update={"epochs": 1}))
    fit = gen.fit(_table(), SPEC, Budget(epsilon=4.0, prior=prior), seed=0)
    dp_sgd = fit.events[-1]
    q, steps = dp_sgd["q"], dp_sgd["steps"]
    assert dp_sgd["sigma"] > accounting.noise_for(4.0, 1e-5, [fit.events[0]], q, steps)
    assert fit.epsilon <= 4.0 * 1.001
    with pytest.raises(ValueError, match="already reach"):
        DPLSTM(SMALL).fit(_table(), SPEC, Budget(epsilon=0.1, prior=prior), seed=0)


def test_samples_keep_to_the_spec_and_repeat_with_the_seed(model):
    a, b = model.sample(30, seed=3), model.sample(30, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(model.sample(30, seed=4))
    assert set(a["product"].dropna()) <= {"Nimbus Phone", "Zenith Router"}
    assert a["rating"].between(1, 5).all() and a["score"].between(0, 1).all()
    assert not a["message"].str.contains("<unk>", regex=False).any()


def test_conditions_and_completion_fix_the_prompt(model):
    rows = model.sample(10, seed=1, conditions={"product": "Zenith Router"})
    assert (rows["product"] == "Zenith Router").all()
    with pytest.raises(ValueError, match="'message'"):
        model.sample(2, seed=0, conditions={"message": "hello"})
    done = model.complete([{"product": "Nimbus Phone", "rating": 2, "score": 0.5,
                            "message": None}], seed=0)
    assert done[0]["product"] == "Nimbus Phone" and done[0]["rating"] == 2
    assert isinstance(done[0]["message"], str)


@pytest.fixture(scope="module")
def trained() -> tuple[DPLSTM, list[float]]:
    gen, losses = DPLSTM(SMALL.model_copy(update={"epochs": 8})), []
    gen.fit(_table(), SPEC, Budget(enabled=False), seed=0,
            on_progress=lambda m: losses.append(m["loss"]))
    return gen, losses


def test_log_prob_prefers_training_like_records(trained):
    model = trained[0]
    rows = pd.DataFrame([{"product": "Nimbus Phone", "rating": 3, "score": 0.5,
                          "message": "my Nimbus Phone stopped working after the update"},
                         {"product": "Nimbus Phone", "rating": 3, "score": 0.5,
                          "message": "purple elephants sing loudly tonight"}])
    lp = model.log_prob(rows)
    assert lp.shape == (2,) and (lp < 0).all()
    assert (model.text_log_prob(rows) > lp).all()  # the structured tokens cost something
    assert model.perplexity(rows.iloc[:1]) < model.perplexity(rows.iloc[1:])


def test_check_rejects_copied_training_text(model):
    copied = {"message": "yes my Zenith Router stopped working after the update today"}
    assert model.check(copied) == "replay"
    assert model.check({"message": "my router is fine"}) is None


def test_save_load_round_trip(model, tmp_path):
    model.save(tmp_path / "m")
    again = base.load(tmp_path / "m")
    pd.testing.assert_frame_equal(again.sample(12, seed=5), model.sample(12, seed=5))
    assert again.check({"message": "my Zenith Router stopped working after the update"}) \
        == "replay"
    assert not any(p.suffix in (".pt", ".pkl") for p in (tmp_path / "m").iterdir())


def test_non_private_fit_spends_nothing_and_learns(trained):
    fit, losses = trained[0].fit_result, trained[1]
    assert fit.epsilon == math.inf and fit.events == [] and not fit.private
    assert losses[-1] < losses[0]


def test_a_value_outside_the_spec_names_its_column():
    bad = _table().assign(product="Vertex Monitor")
    with pytest.raises(ValueError, match="product"):
        DPLSTM(SMALL).fit(bad, SPEC, Budget(enabled=False), seed=0)


def test_one_dp_step_gives_each_record_its_own_clipped_gradient():
    """Opacus' DPLSTM per-sample gradients: record i's equals the gradient of record i's loss
    alone (Opacus undoes the batch mean: loss_reduction "mean"), and clipping bounds the
    summed gradient by batch · C."""
    import torch

    from models import dpsgd
    from models.lstm_lm import record_loss

    gen = DPLSTM(SMALL)
    gen.spec = SPEC
    gen._build_codes(SPEC)
    batch = gen._batch(_table(4).to_dict("records"))
    fields = len(gen.codec.fields)
    torch.manual_seed(0)
    net = gen._network(dp=True)
    reference = gen._network(dp=True)
    reference.load_state_dict(net.state_dict())
    c = 1e-3
    dp = dpsgd.privatize(net, torch.optim.SGD(net.parameters(), lr=0.1), 48, 16, 1,
                         Budget(max_grad_norm=c, accountant="rdp"),
                         torch.Generator().manual_seed(0))
    record_loss(dp.module(batch, fields)[0], batch, gen.vocab.pad).backward()
    params = [p for p in net.parameters() if p.requires_grad]
    assert all(p.grad_sample.shape == (4, *p.shape) for p in params)
    for i in range(4):
        reference.zero_grad()
        one = batch[i : i + 1]
        record_loss(reference(one, fields)[0], one, gen.vocab.pad).backward()
        for p, r in zip(params, reference.parameters(), strict=True):
            torch.testing.assert_close(p.grad_sample[i], r.grad, rtol=1e-4, atol=1e-6)
    norms = torch.stack([p.grad_sample.flatten(1).norm(dim=1) for p in params]).norm(dim=0)
    assert (norms > c).all()  # so clipping has work to do
    dp.optimizer.clip_and_accumulate()
    assert torch.stack([p.summed_grad.norm() for p in params]).norm() <= 4 * c * 1.0001
