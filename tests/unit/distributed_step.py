"""One DP-SGD step of a tiny module through ``models.dpsgd.privatize`` on this rank's part of a
fixed batch: run under torchrun by tests/unit/test_distributed.py, or in-process for W = 1.
``python distributed_step.py OUT`` writes rank 0's figures to OUT."""

from __future__ import annotations

import json
import sys

import torch

from models import dpsgd
from models.base import Budget

N, BATCH, EPOCHS = 40, 8, 3
BUDGET = Budget(epsilon=4.0, delta=1e-4, max_grad_norm=0.5)


def module() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))


def records() -> torch.Tensor:
    return torch.randn(N, 3, generator=torch.Generator().manual_seed(1))


def loss(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[B] per-record losses, large enough that clipping to 0.5 bites."""
    return net(x).pow(2).sum(1) * 3.0


def step(rank: int, world: int) -> dict:
    """With σ = 0, records rank, rank + world, ... of the fixed batch of N: the update times
    the global expected batch is the sum of the clipped per-sample gradients. With σ from the
    budget: the mechanism (σ, q, steps, ε) this rank would run."""
    net = module()
    dp = dpsgd.privatize(net, torch.optim.SGD(net.parameters(), lr=0.0), N, BATCH, EPOCHS,
                         BUDGET, torch.Generator().manual_seed(2), sigma=0.0)
    dp.optimizer.zero_grad(set_to_none=True)
    loss(dp.module, records()[rank::world]).mean().backward()
    dp.optimizer.step()
    expected = dp.optimizer.expected_batch_size * world
    other = module()
    planned = dpsgd.privatize(other, torch.optim.SGD(other.parameters(), lr=0.0), N, BATCH,
                              EPOCHS, BUDGET, torch.Generator().manual_seed(2))
    return {"summed": [(p.grad * expected).flatten().tolist() for p in net.parameters()],
            "expected_batch": expected, "loader_steps": len(dp.loader),
            "sigma": planned.sigma, "q": planned.q, "steps": planned.steps,
            "epsilon": planned.epsilon(BUDGET)}


if __name__ == "__main__":
    import torch.distributed as dist

    dist.init_process_group("gloo")
    out = step(dist.get_rank(), dist.get_world_size())
    if dist.get_rank() == 0:
        with open(sys.argv[1], "w") as f:
            json.dump(out, f)
    dist.destroy_process_group()
