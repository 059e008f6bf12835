"""Model checks: shapes, finite loss, learning, per-sample gradients under Opacus, sampling."""

import pandas as pd
import pytest
import torch
from opacus.grad_sample import GradSampleModule
from transformers.pytorch_utils import Conv1D

from models import causal_lm, dp_layers
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
