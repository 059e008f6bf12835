"""DP-SGD for the neural table families, switched on in this one place (Opacus 1.6).

The private and the non-private fit run the same loop over the same Poisson-sampled batches
(Abadi et al. 2016; Opacus' ``DPDataLoader``): private, Opacus clips each record's gradient to
``max_grad_norm`` and adds N(0, σ²C²) noise per step, σ the least that keeps the run within
the budget composed with what was spent before; non-private, the batches are summed as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, TensorDataset

from models import accounting
from models.base import Budget, Generator, Plan, TableSpec


@dataclass
class Private:
    """What ``privatize`` hands back: the (wrapped) module and optimizer to train, the Poisson
    loader of row indices, and the mechanism's settings."""

    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    private: bool
    sigma: float = 0.0
    q: float = 0.0
    steps: int = 0
    prior: list[dict] = field(default_factory=list)

    def events(self, steps: int | None = None) -> list[dict]:
        """This fit's privacy events after ``steps`` (all planned steps by default)."""
        if not self.private:
            return []
        return [accounting.gaussian(self.sigma, self.q, self.steps if steps is None else steps)]

    def epsilon(self, budget: Budget, steps: int | None = None) -> float:
        """ε of ``prior`` + this fit's events so far, by the budget's accountant."""
        if not self.private:
            return math.inf
        return accounting.epsilon(self.prior + self.events(steps), budget.delta,
                                  budget.accountant)

    def params(self, epochs: int, batch_size: int, budget: Budget) -> dict:
        return {"sigma": self.sigma, "q": self.q, "steps": self.steps, "epochs": epochs,
                "max_grad_norm": budget.max_grad_norm if self.private else None,
                "batch_size": batch_size}


def privatize(module: torch.nn.Module, optimizer: torch.optim.Optimizer, n: int,
              batch_size: int, epochs: int, budget: Budget, generator: torch.Generator,
              prior: list[dict] | None = None, sigma: float | None = None) -> Private:
    """Wrap ``module``/``optimizer`` for DP-SGD over ``n`` records (or not, when
    ``budget.enabled`` is false). The loader yields batches of row indices [B] by Poisson
    sampling at rate q = batch_size / n for ceil(n / batch_size) steps an epoch; σ comes from
    ``accounting.noise_for`` so that ``budget.prior`` + ``prior`` + this run stay within
    ``budget.epsilon`` at ``budget.delta`` (``sigma`` overrides it: the equivalence test sets
    0). ``generator`` drives sampling and noise.

    Inside a process group of world size W > 1 (``models.distributed``): the module is wrapped
    in Opacus' DPDDP, each rank samples its shard at the same q (``PoissonShards``, so q, the
    steps and σ, hence ε, are the one-process run's), ``generator`` is reseeded on ranks > 0,
    and Opacus' distributed optimizer sums the ranks' clipped gradients and adds the noise once.
    ValueError if the prior spending already reaches the target, or for a non-private or
    secure-mode fit across processes (not supported: run those with world size 1)."""
    from opacus import PrivacyEngine
    from opacus.data_loader import DPDataLoader

    from models import distributed

    rank, world = distributed.world()
    plain = DataLoader(TensorDataset(torch.arange(n)), batch_size=min(batch_size, n))
    q, steps = sampling(n, batch_size, epochs)
    spent = list(budget.prior) + list(prior or [])
    if world > 1 and (not budget.enabled or budget.secure_mode):
        raise ValueError("DP-SGD across processes needs privacy on and secure_mode off; "
                         "train this fit with world size 1")
    if not budget.enabled:
        loader = DPDataLoader.from_data_loader(plain, generator=generator)
        return Private(module, optimizer, loader, False, q=q, steps=steps)
    if sigma is None:
        sigma = accounting.noise_for(budget.epsilon, budget.delta, spent, q, steps,
                                     budget.accountant)
    engine = PrivacyEngine(accountant=budget.accountant, secure_mode=budget.secure_mode)
    poisson = True
    if world > 1:
        from opacus.distributed import DifferentiallyPrivateDistributedDataParallel as DPDDP

        distributed.reseed_for_rank(generator, rank)
        module = DPDDP(module)  # broadcasts rank 0's weights
        # Already Poisson: Opacus reads q = 1 / len(loader) and the per-rank expected batch
        # q·N / W from it (privacy_engine.make_private).
        plain, poisson = DataLoader(plain.dataset, collate_fn=distributed.indices,
                                    batch_sampler=distributed.PoissonShards(
                                        n, q, round(1 / q), rank, world, generator)), False
    module, optimizer, loader = engine.make_private(
        module=module, optimizer=optimizer, data_loader=plain, noise_multiplier=sigma,
        max_grad_norm=budget.max_grad_norm, poisson_sampling=poisson,
        noise_generator=None if budget.secure_mode else generator)
    return Private(module, optimizer, loader, True, sigma, q, steps, spent)


def sampling(n: int, batch_size: int, epochs: int) -> tuple[float, int]:
    """(q, steps) as ``privatize`` runs them: ⌈n / batch_size⌉ Poisson batches an epoch, each
    record in each at rate q = 1 / that many."""
    batches = math.ceil(n / min(batch_size, n))
    return 1 / batches, batches * epochs


def plan(gen: Generator, n: int, batch_size: int, epochs: int, budget: Budget,
         spec: TableSpec | None, mechanism: str, prior: list[dict] | None = None) -> Plan:
    """The plan of ``gen``'s fit by ``privatize`` on ``n`` records: σ for ``sampling``'s q and
    steps after ``budget.prior`` + ``prior`` (the family's own releases before DP-SGD), as
    ``privatize`` will find it. ValueError if the prior spending already reaches the target."""
    q, steps = sampling(n, batch_size, epochs)
    events, sigma, eps = [], 0.0, math.inf
    if budget.enabled:
        spent = [*budget.prior, *(prior or [])]
        sigma = accounting.noise_for(budget.epsilon, budget.delta, spent, q, steps,
                                     budget.accountant)
        events = [*(prior or []), accounting.gaussian(sigma, q, steps)]
        eps = accounting.epsilon([*budget.prior, *events], budget.delta, budget.accountant)
    return Plan(gen.family, mechanism if budget.enabled else "none (non-private)", events, eps,
                budget.delta, {"sigma": sigma, "q": q, "steps": steps, "epochs": epochs,
                               "batch_size": batch_size, "expected_batch": q * n,
                               "max_grad_norm": budget.max_grad_norm if budget.enabled
                               else None},
                dpsgd=True, config=gen.config_dict(), spec=spec)


def no_records(optimizer: torch.optim.Optimizer) -> None:
    """An empty Poisson batch still takes a step in the accountant's model (noise only): give
    Opacus' optimizer the per-sample gradients of no records."""
    for p in optimizer.params:
        p.grad_sample = p.new_zeros((0, *p.shape))
