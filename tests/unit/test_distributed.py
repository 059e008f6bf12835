"""DP-SGD across processes (issue 16): the per-rank Poisson sampler, the distributed config, and
one step at world size 2 (torchrun, gloo on loopback) against the one-process step."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from models.distributed import PoissonShards, reseed_for_rank
from tasks import distributed
from tasks.errors import ConfigError
from tasks.train_config import TrainConfig

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import distributed_step  # noqa: E402  (the step both world sizes run)


def test_shards_cover_every_record_once_and_yield_every_step_even_empty():
    n, q, batches = 11, 0.05, 40
    shards = [PoissonShards(n, q, batches, r, 2, torch.Generator().manual_seed(r))
              for r in range(2)]
    assert sorted(int(i) for s in shards for i in s.shard) == list(range(n))
    drawn = [list(s) for s in shards]
    assert all(len(d) == batches == len(s) for d, s in zip(drawn, shards, strict=True))
    assert any(b == [] for d in drawn for b in d)  # an empty draw is a step, not skipped


def test_shards_sample_each_record_at_the_global_rate():
    n, q, batches = 10, 0.3, 4000
    shard = PoissonShards(n, q, batches, 1, 2, torch.Generator().manual_seed(0))
    counts = torch.zeros(n)
    for batch in shard:
        counts[batch] += 1
    rate = counts[1::2] / batches
    assert torch.allclose(rate, torch.full_like(rate, q), atol=0.03)
    assert counts[0::2].sum() == 0  # the other rank's records


def test_shards_refuse_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank 2 outside a world of 2"):
        PoissonShards(10, 0.1, 5, 2, 2, torch.Generator())


def test_ranks_get_their_own_stream_and_rank_0_keeps_the_one_process_stream():
    g0, g1 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    reseed_for_rank(g0, 0)
    reseed_for_rank(g1, 1)
    assert g0.initial_seed() == 5 and g1.initial_seed() != 5


def test_config_refuses_what_cannot_train_distributed():
    assert TrainConfig().distributed.world_size == 1
    with pytest.raises(ValueError, match="world_size"):
        TrainConfig.model_validate({"distributed": {"world_size": 0}})
    with pytest.raises(ValueError, match="family dplstm trains in one process only"):
        TrainConfig.model_validate({"family": "dplstm", "distributed": {"world_size": 2}})
    two = distributed.DistributedConfig(world_size=2)
    with pytest.raises(ConfigError, match=r"train\.distributed\.world_size=2: family dpctgan"):
        distributed.check("dpctgan", two, True)  # auto's choice, checked when made
    # The non-private control trains in one process; so does everything at world size 1.
    assert not distributed.check("dpctgan", two, False)
    assert not distributed.check("tvae", distributed.DistributedConfig(), True)
    assert distributed.check("tvae", two, True) and distributed.check("causal_lm", two, True)
    assert distributed.backend(two) == "gloo" and distributed.backend(two, cuda=True) == "nccl"


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ddp")
    distributed.run(2, [str(HERE / "distributed_step.py"), str(out / "rank0.json")],
                    out / "workers.log", timeout=240)
    return json.loads((out / "rank0.json").read_text())


def test_summed_clipped_gradients_equal_across_world_sizes(two_processes):
    one = distributed_step.step(0, 1)
    assert two_processes["expected_batch"] == one["expected_batch"]
    for a, b in zip(two_processes["summed"], one["summed"], strict=True):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-6, rtol=1e-6)
    # Clipping bit: the unclipped sum is another vector.
    net = distributed_step.module()
    distributed_step.loss(net, distributed_step.records()).sum().backward()
    assert not torch.allclose(net[2].bias.grad, torch.tensor(one["summed"][3]), atol=1e-3)


def test_epsilon_equal_across_world_sizes(two_processes):
    one = distributed_step.step(0, 1)
    assert two_processes["loader_steps"] == one["loader_steps"] == round(1 / one["q"])
    for key in ("q", "steps"):
        assert two_processes[key] == one[key]
    assert two_processes["sigma"] == pytest.approx(one["sigma"], rel=1e-9)
    assert two_processes["epsilon"] == pytest.approx(one["epsilon"], rel=1e-9)
    assert one["epsilon"] <= distributed_step.BUDGET.epsilon


@pytest.mark.slow
def test_a_causal_lm_killed_in_two_processes_resumes_in_one_with_the_same_epsilon(tmp_path):
    from models import causal_lm
    from models.tokenizer import ByteTokenizer
    from tasks.train import PrivacyConfig, train

    tok = ByteTokenizer()
    seqs = [tok.encode(f"record {i} | {'ab' * (i % 7)}", 32) for i in range(256)]
    cfg = TrainConfig(model=causal_lm.LMConfig(n_layer=1, n_head=2, n_embd=16, block_size=32),
                      epochs=4, batch_size=32, physical_batch_size=16,
                      privacy=PrivacyConfig(target_epsilon=4.0, accountant="rdp"),
                      distributed={"world_size": 2})
    ckpt, seen = tmp_path / "checkpoint.pt", []

    def killed(m):  # the parent dies at the first epoch it hears of, taking the workers along
        seen.append(m["epoch"])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distributed.train_lm(seqs, cfg, tok, 3, killed, checkpoint=ckpt)
    done = torch.load(ckpt, weights_only=True)["epoch"]
    assert seen == [1] and 1 <= done < cfg.epochs, "killed before the run ended"
    one = cfg.model_copy(update={"distributed": distributed.DistributedConfig()})
    logged = []
    _, resumed = train(seqs, one, tok, seed=3, resume_from=ckpt,
                       on_epoch_end=lambda m: logged.append(m["epoch"]))
    _, whole = train(seqs, one, tok, seed=3)
    assert logged == list(range(done + 1, cfg.epochs + 1))
    assert resumed.steps == whole.steps and resumed.noise_multiplier == whole.noise_multiplier
    assert abs(resumed.epsilon - whole.epsilon) < 1e-9
