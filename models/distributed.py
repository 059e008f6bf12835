"""DP-SGD across processes (PyTorch distributed, Opacus 1.6's DP-DDP): which rank this process
is, and the Poisson sampler each rank draws its share of a batch with.

Each rank holds a fixed shard of the records (every ``world_size``-th index) and includes each of
them in a step's batch independently with the global rate q, so the union over ranks is exactly
one Poisson sample of all N records at rate q (expected batch q·N), the sampling the accountant
assumes. Opacus' ``DistributedDPOptimizer`` then all-reduces the clipped sums and adds the noise
on rank 0 only (opacus/optimizers/ddpoptimizer.py, ``add_noise``/``reduce_gradients``), so the
step is the one-process step: (Σ clipped + N(0, σ²C²)) / (q·N).
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside an initialized process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class PoissonShards(Sampler[list[int]]):
    """Batches of record indices for one rank: ``batches`` steps per pass, each a Poisson
    sample at rate ``q`` of the indices ``rank, rank + world_size, ...`` below ``n``.

    Unlike Opacus' ``DistributedUniformWithReplacementSampler``, an empty draw is yielded, not
    skipped: every rank must take every step (the all-reduce is collective) and the accountant
    counts it. ``generator`` must differ between ranks, or the shards would be drawn alike."""

    def __init__(self, n: int, q: float, batches: int, rank: int, world_size: int,
                 generator: torch.Generator):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        self.shard = torch.arange(rank, n, world_size)
        self.q, self.batches, self.generator = q, batches, generator

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        for _ in range(self.batches):
            mask = torch.rand(len(self.shard), generator=self.generator) < self.q
            yield self.shard[mask].tolist()


def indices(items: list[tuple[torch.Tensor]]) -> tuple[torch.Tensor]:
    """Collate a (possibly empty) list of ``TensorDataset(arange(n))`` items into ([B] long,)."""
    return (torch.tensor([int(i) for (i,) in items], dtype=torch.long),)


def reseed_for_rank(generator: torch.Generator, rank: int, salt: int = 0) -> None:
    """Give rank r > 0 a stream of its own, derived from ``generator``'s seed and ``salt`` (a
    resumed run's epoch, so no stream is replayed), in place: its shard's sampling and the
    family's per-record randomness from here on. Rank 0 keeps the one-process stream, and the
    noise, drawn on rank 0 only, with it."""
    if rank > 0:
        generator.manual_seed(hash((generator.initial_seed(), rank, salt))
                              & 0x7FFF_FFFF_FFFF_FFFF)
