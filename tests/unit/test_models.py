"""Model checks: shapes, finite loss, learning, per-sample gradients under Opacus, sampling."""

import pandas as pd
import pytest
import torch
from opacus.grad_sample import GradSampleModule
from transformers.pytorch_utils import Conv1D

from models import causal_lm, dp_layers, sampling
from models.records import RecordCodec, RecordGrammar
from models.tokenizer import ByteTokenizer

TOK = ByteTokenizer()
TINY = causal_lm.LMConfig(n_layer=1, n_head=2, n_embd=16, block_size=64)


def _batch(n=4, t=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (n, t), generator=g)
    mask = torch.ones_like(ids)
    mask[0, t // 2:] = 0  # one padded sequence
    return ids, mask


def test_tokenizer_round_trip_and_truncation():
    ids = TOK.encode("héllo | world", max_length=64)
    assert ids[0] == TOK.bos_id and ids[-1] == TOK.eos_id
    assert TOK.decode(ids[1:]) == "héllo | world"
    assert len(TOK.encode("x" * 500, max_length=32)) == 32


def test_codec_round_trip_and_rejects_malformed_lines():
    codec = RecordCodec(("product", "rating", "message"), ("rating",), (1,))
    line = codec.encode({"product": "Nimbus | Phone", "rating": 4, "message": "a | b"})
    assert codec.decode(line) == {"product": "Nimbus / Phone", "rating": 4, "message": "a | b"}
    assert codec.decode("only | two") is None
    assert codec.decode("x | four | msg") is None
    frame = codec.frame([codec.decode(line)])
    assert str(frame["rating"].dtype) == "Int64" and isinstance(frame, pd.DataFrame)


def test_forward_shapes_and_finite_per_sample_loss():
    model = causal_lm.build(TINY, TOK)
    ids, mask = _batch()
    loss = causal_lm.per_sample_loss(model, ids, mask)
    assert loss.shape == (4,) and torch.isfinite(loss).all()
    assert model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr()


def test_loss_falls_in_a_few_cpu_steps():
    torch.manual_seed(0)
    model = causal_lm.build(TINY, TOK)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    ids = torch.tensor([TOK.encode("abcabcabcabcabcabc", 64)] * 8)
    mask = torch.ones_like(ids)
    first = causal_lm.per_sample_loss(model, ids, mask).mean().item()
    for _ in range(30):
        opt.zero_grad()
        causal_lm.per_sample_loss(model, ids, mask).mean().backward()
        opt.step()
    assert causal_lm.per_sample_loss(model, ids, mask).mean().item() < first / 2


def test_conv1d_per_sample_gradients_match_single_example_backward():
    """Opacus hooks (with privgen's Conv1D sampler) give each record exactly its own gradient."""
    dp_layers.install()
    torch.manual_seed(0)
    model = causal_lm.build(TINY, TOK)
    ids, mask = _batch(n=3)
    gsm = GradSampleModule(model, loss_reduction="sum")
    causal_lm.per_sample_loss(gsm, ids, mask).sum().backward()
    for i in range(3):
        single = causal_lm.build(TINY, TOK)
        single.load_state_dict(model.state_dict())
        causal_lm.per_sample_loss(single, ids[i:i + 1], mask[i:i + 1]).sum().backward()
        for (name, p), (_, q) in zip(model.named_parameters(), single.named_parameters(),
                                     strict=True):
            assert torch.allclose(p.grad_sample[i], q.grad, atol=1e-6, rtol=1e-4), name


def test_grammar_keeps_every_sample_parseable_even_untrained():
    codec = RecordCodec(("a", "n", "message"), ("n",), (1,))
    model = causal_lm.build(TINY, TOK)
    grammar = RecordGrammar(codec, TOK.eos_id, TOK.vocab_size, prompt_length=1,
                            max_field_bytes=16)
    texts = causal_lm.generate(model, TOK, 16, seed=3, max_new_tokens=63, grammar=grammar)
    rows = [codec.decode(t) for t in texts]
    assert all(r is not None and 0 <= r["n"] <= 9 for r in rows)
    again = causal_lm.generate(model, TOK, 16, seed=3, max_new_tokens=63, grammar=grammar)
    assert texts == again


def test_sampler_forward_matches_the_hf_model_with_its_cache():
    torch.manual_seed(0)
    model = causal_lm.build(TINY, TOK).eval()
    ids = torch.randint(0, 256, (3, 20))
    with torch.no_grad():
        reference = model(input_ids=ids).logits                          # [3, 20, V]
        cache = sampling.KVCache(model, 3, 64)
        logits = [sampling.forward(model, ids[:, :12], 0, cache)]        # prefill
        logits += [sampling.forward(model, ids[:, p:p + 1], p, cache) for p in range(12, 20)]
    torch.testing.assert_close(torch.stack(logits, 1), reference[:, 11:], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("settings", [{}, {"temperature": 0.7, "top_k": 20, "top_p": 0.9}],
                         ids=["plain", "filtered"])
def test_sampling_is_deterministic_and_dropping_finished_rows_changes_nothing(
        settings, monkeypatch):
    codec = RecordCodec(("a", "n", "message"), ("n",), (1,))
    torch.manual_seed(0)
    model = causal_lm.build(TINY, TOK)
    grammar = RecordGrammar(codec, TOK.eos_id, TOK.vocab_size, 1, max_field_bytes=8)

    def texts(**kw):
        return sampling.generate(model, TOK, 12, seed=5, max_new_tokens=63, batch_size=12,
                                 grammar=grammar, **settings, **kw)

    first = texts()
    assert first == texts() and first != sampling.generate(
        model, TOK, 12, seed=6, max_new_tokens=63, batch_size=12, grammar=grammar, **settings)
    assert texts(compact=False) == first
    monkeypatch.setattr(sampling, "supported", lambda model: False)  # HF's forward and cache
    assert texts() == first


def test_a_forced_field_is_written_as_the_codec_writes_it():
    codec = RecordCodec(("a", "n", "b", "message"), ("n",), (1,))
    model = causal_lm.build(TINY, TOK)
    forced = {"n": "4", "b": "Nimbus Phone"}
    grammar = RecordGrammar(codec, TOK.eos_id, TOK.vocab_size, 1, max_field_bytes=8,
                            forced=forced)
    texts = causal_lm.generate(model, TOK, 8, seed=1, max_new_tokens=63, grammar=grammar)
    rows = [codec.decode(t) for t in texts]
    assert all(r is not None and r["n"] == 4 and r["b"] == "Nimbus Phone" for r in rows)
    assert all("| 4 | Nimbus Phone |" in t for t in texts)
    with pytest.raises(ValueError, match="forced fields are among a, n, b"):
        RecordGrammar(codec, TOK.eos_id, TOK.vocab_size, 1, forced={"message": "hi"})


def test_a_field_with_a_form_only_takes_values_matching_it():
    codec = RecordCodec(("a", "n", "b", "message"), ("n",), (1,))
    model = causal_lm.build(TINY, TOK)
    forms = {"a": "^(?:email|web_form)$", "n": "^(?:1|2|3)$", "b": r"^(?:\d{3}0s|\*)$",
             "message": "^x$"}  # the last field too (issue 12: its form was ignored)
    grammar = RecordGrammar(codec, TOK.eos_id, TOK.vocab_size, 1, forms=forms)
    rows = [codec.decode(t) for t in
            causal_lm.generate(model, TOK, 8, seed=2, max_new_tokens=63, grammar=grammar)]
    assert all(r["a"] in ("email", "web_form") and r["n"] in (1, 2, 3) for r in rows)
    assert all(r["b"] == "*" or (len(r["b"]) == 5 and r["b"].endswith("0s")) for r in rows)
    assert all(r["message"] == "x" for r in rows)


def test_codec_says_why_a_line_does_not_parse():
    codec = RecordCodec(("product", "rating", "message"), ("rating",), (1,))
    assert codec.parse("only | two") == (None, "parse:fields")
    assert codec.parse("x |  | msg") == (None, "parse:empty:rating")
    assert codec.parse("x | four | msg") == (None, "parse:integer:rating")


def test_save_load_round_trip_unwraps_opacus(tmp_path):
    dp_layers.install()
    model = causal_lm.build(TINY, TOK)
    causal_lm.save(GradSampleModule(model), tmp_path / "m", {"codec": {"fields": ["x"]}})
    loaded, meta = causal_lm.load(tmp_path / "m")
    assert meta["codec"]["fields"] == ["x"]
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("heads, width", [(3, 16)])
def test_width_must_divide_into_heads(heads, width):
    with pytest.raises(ValueError, match="multiple of n_head"):
        causal_lm.LMConfig(n_head=heads, n_embd=width)


@pytest.mark.parametrize("t", [3, 40], ids=["ghost-branch", "instantiate-branch"])
def test_conv1d_norm_sampler_equals_the_norm_of_per_sample_gradients(t):
    """Both branches of the mixed ghost-clipping norm: T² below and above in·out (6·5 = 30)."""
    layer = Conv1D(5, 6)  # nf=out=5, nx=in=6: weight [6, 5]
    x, g = torch.randn(4, t, 6), torch.randn(4, t, 5)
    grads = dp_layers.conv1d_grad_sample(layer, [x], g)
    norms = dp_layers.linear_norm_sample(layer, [x], g)
    for p in (layer.weight, layer.bias):
        torch.testing.assert_close(norms[p], grads[p].flatten(1).norm(2, dim=1))
