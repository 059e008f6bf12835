"""The one draw (tasks.draw) over the causal LM's family wrapper: a model folder loads through
models.base.load, draws deterministically, holds conditions and release rules, and the pyfunc's
predict gives what the generation stage draws."""

import pandas as pd
import pytest
import torch

from models import base, causal_lm
from models.causal_lm_family import CausalLM
from models.pyfunc import GeneratorModel
from tasks import draw, release
from tasks.errors import GenerationError


@pytest.fixture(scope="module")
def folder(tiny_lm):
    return tiny_lm.folder


def test_a_causal_lm_folder_loads_as_a_generator_with_its_spec(folder):
    gen = base.load(folder)
    assert isinstance(gen, CausalLM) and gen.family == "causal_lm"
    assert [(f.name, f.kind) for f in gen.spec.fields] == [
        ("product", "categorical"), ("rating", "numeric"), ("message", "text")]
    assert gen.spec.field("product").values == ("Nimbus", "Pulse")
    assert gen.spec.field("rating").integer and gen.spec.field("rating").high == 5


def test_the_draw_is_deterministic_and_holds_the_release_rules_and_condition(folder):
    gen, specs = draw.load(folder)
    draw.set_sampling(gen, {"batch_size": 8})
    one = draw.draw_records(gen, 6, 3, specs, {"product": "Pulse"})
    assert one.records == draw.draw_records(gen, 6, 3, specs, {"product": "Pulse"}).records
    assert one.generated == len(one.records) + sum(one.rejected.values()) + one.surplus
    for row in one.records:
        assert row["product"] == "Pulse" and 1 <= row["rating"] <= 5
        assert release.violation(row, specs) is None
    assert one.records != draw.draw_records(gen, 6, 4, specs, {"product": "Pulse"}).records


def test_pii_and_replay_are_rejected_and_kept_out_of_the_quarantine(folder, monkeypatch):
    gen, specs = draw.load(folder)
    lines = ["Nimbus | 4 | works fine", "a line without separators",
             "write to jane.doe@example.com",
             "Nimbus | 3 | mail me at a.b@example.com",
             "Nimbus | 2 | the parcel never arrived and nobody answered my three calls"]
    monkeypatch.setattr(causal_lm, "generate",
                        lambda model, tok, n, **kw: [lines[i % len(lines)] for i in range(n)])
    drawn = draw.draw_records(gen, 3, 1, specs)
    assert drawn.rejected["pii"] >= 1 and drawn.rejected["replay"] == len(drawn.replayed) >= 1
    assert {q["text"] for q in drawn.quarantine} == {"a line without separators"}
    assert [r["message"] for r in drawn.records] == ["works fine"] * 3


@pytest.mark.parametrize("condition, message", [
    ({"colour": "red"}, "not a structured column of this model; use one of product, rating"),
    ({"message": "hello"}, "not a structured column"),
    ({"rating": "9"}, "not allowed by the training data's contract"),
    ({"rating": "high"}, "holds whole numbers"),
    ({"product": "Orbit"}, "allowed: Nimbus, Pulse"),
    ({"product": "a | b"}, "without '|'"),
])
def test_a_condition_the_model_cannot_honour_is_refused(folder, condition, message):
    gen, specs = draw.load(folder)
    with pytest.raises(GenerationError, match=message):
        draw.check_condition(condition, gen, specs)


def test_the_pyfunc_predict_gives_the_shards_the_generation_stage_draws(folder):
    wrapper, context = GeneratorModel.from_dir(folder)
    params = {"temperature": 0.9, "batch_size": 8, "shard_size": 3}
    out = wrapper.predict(context, pd.DataFrame({"n": [5], "seed": [7]}), params)
    gen, specs = draw.load(folder)
    draw.set_sampling(gen, {"temperature": 0.9, "batch_size": 8})
    expected = [r for s in draw.shard_plan(5, 3, 7)
                for r in draw.draw_records(gen, s.n, s.seed, specs).records]
    pd.testing.assert_frame_equal(out, gen.frame(expected))
    assert list(out.columns) == ["product", "rating", "message"]


def test_the_pyfunc_refuses_a_negative_n_naming_the_request(folder):
    wrapper, context = GeneratorModel.from_dir(folder)
    with pytest.raises(ValueError, match="request 1: n=-3"):
        wrapper.predict(context, pd.DataFrame({"n": [2, -3], "seed": [0, 0]}))


def test_a_folder_saved_before_family_json_still_loads(tiny_lm):
    gen, specs = draw.load(tiny_lm.legacy)
    assert gen.family == "causal_lm" and [s.name for s in specs] == list(tiny_lm.fields)


def test_log_prob_is_the_sum_of_token_losses_and_perplexity_their_mean(folder):
    gen = base.load(folder)
    rows = pd.DataFrame([{"product": "Nimbus", "rating": 4, "message": "works fine"}])
    logp = gen.log_prob(rows)
    assert logp.shape == (1,) and logp[0] < 0
    _, tokens = gen.token_losses(rows)
    assert gen.perplexity(rows) == pytest.approx(float(torch.tensor(-logp[0] / tokens[0]).exp()))
