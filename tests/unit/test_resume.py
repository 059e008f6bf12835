"""A resumed run is the uninterrupted run: same ε (accountant history restored), same step count,
same weights (model, optimizer and every RNG, the Poisson sampler's included, restored)."""

import pytest
import torch

from models import causal_lm
from models.tokenizer import ByteTokenizer
from tasks.train import PrivacyConfig, TrainConfig, train

TOK = ByteTokenizer()
TINY = causal_lm.LMConfig(n_layer=1, n_head=2, n_embd=16, block_size=32)
SEQS = [TOK.encode(f"record {i} | {'ab' * (i % 7)}", 32) for i in range(64)]


def test_resume_after_one_epoch_matches_an_uninterrupted_run(tmp_path):
    cfg = TrainConfig(model=TINY, epochs=2, batch_size=16, physical_batch_size=8,
                      privacy=PrivacyConfig(target_epsilon=4.0, accountant="rdp"))
    whole, whole_result = train(SEQS, cfg, TOK, seed=3)

    ckpt = tmp_path / "checkpoint.pt"
    ended = []

    def killed(metrics):  # the run dies right after epoch 1's checkpoint
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(SEQS, cfg, TOK, seed=3, checkpoint=ckpt, on_epoch_end=killed, on_end=ended.append)
    assert ckpt.is_file() and 0 < ended[0]["epsilon"] < whole_result.epsilon  # ε still logged
    logged = []
    resumed, result = train(SEQS, cfg, TOK, seed=3, resume_from=ckpt,
                            on_epoch_end=lambda m: logged.append(m["epoch"]))

    assert logged == [2]  # no epoch (metric step) logged twice
    assert result.steps == whole_result.steps
    assert abs(result.epsilon - whole_result.epsilon) < 1e-9
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
