"""DP-SGD clips each record's own gradient: every supported Opacus mode, checked against 8
separate single-example backward passes, for every parameter of a tiny GPT-2 (issue 5)."""

import pytest
import torch
from torch.utils.data import DataLoader

from models import causal_lm
from models.tokenizer import ByteTokenizer
from tasks.train import PrivacyConfig, SequenceDataset, TrainConfig, _privatize, _StepGate

TOK = ByteTokenizer()
TINY = causal_lm.LMConfig(n_layer=2, n_head=2, n_embd=16, block_size=32)
B = 8


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 256, (B, 24), generator=g)
    mask = torch.ones_like(ids)
    for i in range(B):  # padding of varying length
        mask[i, 24 - 2 * i:] = 0
    return ids, mask


def _reference(model, ids, mask):
    """Per-parameter gradient of each record's loss, one backward pass per record."""
    grads = []
    for i in range(B):
        model.zero_grad()
        causal_lm.per_sample_loss(model, ids[i:i + 1], mask[i:i + 1]).sum().backward()
        grads.append({name: p.grad.detach().clone() for name, p in model.named_parameters()})
    norms = torch.stack([torch.sqrt(sum((g ** 2).sum() for g in gi.values())) for gi in grads])
    return grads, norms


@pytest.mark.parametrize("physical", [B, 3], ids=["one-batch", "split-3"])
@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_clipped_gradients_equal_single_example_backward(mode, physical):
    torch.manual_seed(0)
    base = causal_lm.build(TINY, TOK).double()
    ids, mask = _batch()
    grads, norms = _reference(base, ids, mask)
    clip = norms.median().item()  # about half the records are clipped, half are not
    # Opacus' clip factor, which DP-SGD's guarantee is stated for: min(1, C / (‖g‖ + 1e-6)).
    factor = (clip / (norms + 1e-6)).clamp(max=1.0)
    expected = {name: sum(factor[i] * grads[i][name] for i in range(B)) for name in grads[0]}
    assert (factor < 1).any() and (factor == 1).any()

    model = causal_lm.build(TINY, TOK).double()
    model.load_state_dict(base.state_dict())
    cfg = TrainConfig(model=TINY, batch_size=B, physical_batch_size=physical,
                      privacy=PrivacyConfig(max_grad_norm=clip, grad_sample_mode=mode))
    loader = DataLoader(SequenceDataset([[0]] * B), batch_size=B)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    model, optimizer, criterion, _, _ = _privatize(model, optimizer, loader, cfg, delta=1e-5,
                                                   noise_multiplier=0.0)
    gate = _StepGate(optimizer, private=True)
    chunks = list(zip(ids.split(physical), mask.split(physical), strict=True))
    seen_norms = []
    for k, (ci, cm) in enumerate(chunks):
        gate.signal_skip_step(k < len(chunks) - 1)
        criterion(causal_lm.per_sample_loss(model, ci, cm)).backward()
        if mode == "ghost":
            seen_norms.append(model.per_sample_gradient_norms.detach().clone())
        else:
            seen_norms.append(torch.stack([p.grad_sample.flatten(1).norm(2, dim=1)
                                           for p in model.parameters()]).norm(2, dim=0))
        if k < len(chunks) - 1:
            gate.step()
            gate.zero_grad()
    optimizer.pre_step()  # clip, add (zero) noise, divide by the expected batch size

    seen = torch.cat(seen_norms)
    torch.testing.assert_close(seen, norms, rtol=1e-5, atol=0)
    torch.testing.assert_close(torch.minimum(seen, torch.tensor(clip, dtype=seen.dtype)),
                               norms * factor, rtol=1e-5, atol=1e-12)
    for name, p in causal_lm.unwrap(model).named_parameters():
        summed = p.grad * optimizer.expected_batch_size
        torch.testing.assert_close(summed, expected[name], rtol=1e-5, atol=1e-12, msg=name)
