"""DP-SGD for the causal language model: Opacus (Poisson sampling, per-sample clipping, PRV or
RDP accounting) over records serialized as text, with atomic checkpoints and resume that keep
the accountant's history. The train stage (``tasks.train``) runs it; it knows nothing of
tracking (``on_epoch_end`` callbacks).

Privacy is switched on in exactly one place, ``_privatize``; the non-private baseline runs the
same loop with the same sampling, so comparisons between the two are honest (Abadi et al. 2016;
Opacus' mnist example).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from opacus.utils.batch_memory_manager import BatchMemoryManager
from torch.utils.data import DataLoader, Dataset

from models import causal_lm, dp_layers
from models import tokenizer as tokenizers
from models.records import RecordCodec
from models.tokenizer import Tokenizer
from tasks import checkpoints, composition
from tasks.contract import DataContract, DType, Role
from tasks.errors import ConfigError, PrivacyError

if TYPE_CHECKING:
    from tasks.train_config import PrivacyConfig, TrainConfig

@dataclass
class TrainResult:
    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    epochs: int
    accountant: str
    private: bool
    final_loss: float
    seconds: float


def codec_for(contract: DataContract, columns: list[str]) -> RecordCodec:
    """Serialize the non-identifying columns, free text last; ids and identifiers never."""
    excluded = {Role.ID, Role.DIRECT_IDENTIFIER}
    specs = [c for c in contract.columns if c.role not in excluded and c.name in columns]
    ordered = [c for c in specs if c.role is not Role.TEXT] + [c for c in specs
                                                                if c.role is Role.TEXT]
    ints = [c for c in ordered if c.dtype is DType.INTEGER]
    widths = tuple(max(len(str(int(c.min))), len(str(int(c.max))))
                   if c.min is not None and c.max is not None else 10 for c in ints)
    return RecordCodec(tuple(c.name for c in ordered), tuple(c.name for c in ints), widths)


class SequenceDataset(Dataset):
    def __init__(self, sequences: list[list[int]]):
        self.sequences = sequences

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor(self.sequences[i], dtype=torch.long)


def load_tokenizer(cfg: causal_lm.LMConfig) -> Tokenizer:
    try:
        return tokenizers.for_pretrained(cfg.pretrained)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"train.model.pretrained={cfg.pretrained}: cannot load its tokenizer "
                          f"({str(exc).splitlines()[0]}); give a local save_pretrained folder "
                          "or a hub name reachable from here") from None


def build_model(cfg: causal_lm.LMConfig, tokenizer: Tokenizer) -> torch.nn.Module:
    try:
        return causal_lm.build(cfg, tokenizer)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"train.model.pretrained={cfg.pretrained}: cannot load the model "
                          f"({str(exc).splitlines()[0]})") from None


def pad_batch(items: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence in the batch: [B, T] ids and attention mask."""
    longest = max((len(x) for x in items), default=1)
    ids = torch.full((len(items), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), longest), dtype=torch.long)
    for i, x in enumerate(items):
        ids[i, : len(x)] = x
        mask[i, : len(x)] = 1
    return ids, mask


def encode(df: pd.DataFrame, codec: RecordCodec, tokenizer: Tokenizer,
           max_length: int) -> list[list[int]]:
    return [tokenizer.encode(codec.encode(row), max_length) for row in df.to_dict("records")]


def _composed(cfg: TrainConfig, spend: composition.DomainSpend, sgd_epsilon: float,
              n: int) -> tuple[TrainConfig, Callable[[int], float]]:
    """(the config DP-SGD is calibrated with: its ε target is what the domain estimates left,
    ε after ``steps`` of it composed with ``spend``), σ and q as Opacus sets them for ``n``."""
    from opacus.accountants.utils import get_noise_multiplier

    p = cfg.privacy.model_copy(update={"target_epsilon": sgd_epsilon})
    delta, batches = resolve_delta(p, n), math.ceil(n / cfg.batch_size)
    sigma = get_noise_multiplier(target_epsilon=sgd_epsilon, target_delta=delta,
                                 sample_rate=1 / batches, steps=batches * cfg.epochs,
                                 accountant=p.accountant)
    return cfg.model_copy(update={"privacy": p}), lambda steps: composition.epsilon(
        p.accountant, (sigma, 1 / batches, steps), spend, delta)


def resolve_delta(cfg: PrivacyConfig, n: int) -> float:
    delta = cfg.target_delta if cfg.target_delta is not None else 1.0 / (10 * n)
    if delta >= 1.0 / n:
        raise PrivacyError(
            f"train.privacy.target_delta={delta:g} is not below 1/N = {1 / n:g} for N={n} "
            "training records; lower it"
        )
    return delta


class _PerSampleLoss:
    """The "criterion" Opacus' ghost wrapper calls: our loss is already one value per record."""

    reduction = "mean"  # Opacus sets "none" around the call; the mean is taken in backward()

    def __call__(self, losses: torch.Tensor) -> torch.Tensor:
        return losses


def _privatize(model, optimizer, loader, cfg: TrainConfig, delta: float,
               noise_multiplier: float | None = None, poisson: bool = True):
    """The one place DP is switched on: Opacus wraps model, optimizer and Poisson loader.

    Returns (model, optimizer, criterion, loader, engine); ``criterion`` turns per-sample losses
    into what ``.backward()`` is called on. σ comes from the ε target unless ``noise_multiplier``
    is given (the correctness test sets it to 0). ``poisson`` false: ``loader`` already samples
    by Poisson (``models.distributed.PoissonShards`` across processes).
    """
    dp_layers.install()
    p = cfg.privacy
    engine = PrivacyEngine(accountant=p.accountant, secure_mode=p.secure_mode)
    common = dict(module=model, optimizer=optimizer, data_loader=loader,
                  max_grad_norm=p.max_grad_norm, poisson_sampling=p.poisson_sampling and poisson,
                  grad_sample_mode=p.grad_sample_mode, criterion=_PerSampleLoss())
    if noise_multiplier is None:
        wrapped = engine.make_private_with_epsilon(
            **common, target_epsilon=p.target_epsilon, target_delta=delta, epochs=cfg.epochs)
    else:
        wrapped = engine.make_private(**common, noise_multiplier=noise_multiplier)
    if p.grad_sample_mode == "ghost":  # Opacus 1.6 also returns a criterion in ghost mode
        model, optimizer, criterion, loader = wrapped
    else:
        (model, optimizer, loader), criterion = wrapped, torch.mean
    return model, optimizer, criterion, loader, engine


class _StepGate:
    """Lets BatchMemoryManager split a logical batch for the private and the baseline run alike.

    Opacus' DPOptimizer already accumulates clipped gradients until the logical batch ends; the
    plain baseline optimizer gets the same behaviour here. Counts real (logical) steps.
    """

    def __init__(self, optimizer, private: bool):
        self.optimizer, self.private, self.skip, self.steps = optimizer, private, False, 0

    def signal_skip_step(self, do_skip: bool = True) -> None:
        self.skip = do_skip
        if self.private:
            self.optimizer.signal_skip_step(do_skip)

    def step(self) -> None:
        if self.private or not self.skip:
            self.optimizer.step()
        self.steps += not self.skip

    def zero_grad(self) -> None:
        if self.private or not self.skip:
            self.optimizer.zero_grad(set_to_none=True)


def _zero_gradients(optimizer, mode: str) -> None:
    """What an empty batch contributes, in the form each Opacus optimizer reads: no records."""
    for p in optimizer.params:
        if mode == "ghost":
            p.grad = torch.zeros_like(p)
        else:
            p.grad_sample = p.new_zeros((0, *p.shape))


def train(sequences: list[list[int]], cfg: TrainConfig, tokenizer: Tokenizer, seed: int,
          on_epoch_end: Callable[[dict], None] = lambda m: None, *,
          on_end: Callable[[dict], None] = lambda m: None, checkpoint: Path | None = None,
          resume_from: Path | None = None, max_steps: int | None = None,
          on_resume: Callable[[dict], None] = lambda m: None):
    """Train a fresh model on ``sequences``; returns (unwrapped model, TrainResult).

    ``checkpoint``: written atomically after every epoch. ``resume_from``: a checkpoint of the
    same config and data to continue from, with its accountant history, so ε is not reset.
    ``on_end`` receives the ε spent so far even when training fails midway. ``on_resume``
    receives the checkpointed epoch's metrics, which a kill may have kept from being logged.
    ``max_steps``: stop after that many logical steps (preflight's dry run).

    In a process group of W > 1 (``tasks.distributed`` launches one): Opacus' DP-DDP, each
    rank Poisson-samples its shard at the one-process rate, rank 0 alone writes checkpoints. A
    checkpoint resumes at any world size: the fingerprint leaves the world size out.
    """
    from models import distributed

    rank, world = distributed.world()
    if world > 1 and not cfg.privacy.enabled:
        raise ValueError("the non-private baseline trains in one process")
    torch.manual_seed(seed)
    n = len(sequences)
    delta = resolve_delta(cfg.privacy, n)
    device = torch.device("cuda" if cfg.device == "cuda" or (
        cfg.device == "auto" and torch.cuda.is_available()) else "cpu")
    model = raw = build_model(cfg.model, tokenizer).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    loader = DataLoader(SequenceDataset(sequences), batch_size=cfg.batch_size,
                        collate_fn=lambda b: pad_batch(b, tokenizer.pad_id),
                        generator=torch.Generator().manual_seed(seed))
    if world > 1:
        from opacus.distributed import DifferentiallyPrivateDistributedDataParallel as DPDDP

        distributed.reseed_for_rank(loader.generator, rank)
        batches = math.ceil(n / cfg.batch_size)
        model = DPDDP(model)  # broadcasts rank 0's weights
        loader = DataLoader(loader.dataset, collate_fn=loader.collate_fn,
                            batch_sampler=distributed.PoissonShards(
                                n, 1 / batches, batches, rank, world, loader.generator))
    engine = None
    if cfg.privacy.enabled:
        model, optimizer, criterion, loader, engine = _privatize(model, optimizer, loader, cfg,
                                                                 delta, poisson=world == 1)
    else:
        # Same Poisson sampling as the private run, so the baseline differs only in DP; the
        # loss is scaled like Opacus scales the clipped sum: by the expected batch size.
        loader = DPDataLoader.from_data_loader(loader, generator=loader.generator)
        expected = n / len(loader)  # Opacus' expected batch size: N × sample rate

        def criterion(losses: torch.Tensor) -> torch.Tensor:
            return losses.sum() / expected
    sample_rate = 1.0 / len(loader)
    sampler_rng = loader.batch_sampler.generator
    gate = _StepGate(optimizer, private=engine is not None)
    fingerprint = {"config": cfg.model_dump(mode="json", exclude={"distributed"}),
                   "records": n, "seed": seed}
    first_epoch, last_loss, spent = 1, math.nan, 0.0
    if resume_from is not None:
        # Tensors and plain values only, read on the CPU (RNG states must stay there); the
        # model and optimizer copy theirs onto the training device. On a GPU the CUDA noise
        # generator is not checkpointed: the resumed weights differ, the ε does not.
        state = torch.load(resume_from, weights_only=True, map_location="cpu")
        if state["fingerprint"] != fingerprint:
            raise PrivacyError(f"{resume_from}: checkpoint was written for another config, data "
                               "size or seed; resume with the run's own settings")
        raw.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if engine is not None:
            engine.accountant.load_state_dict(state["accountant"])
        checkpoints.restore_rng(state["rng"], sampler_rng)
        # Ranks > 0 continue on streams of their own, never a replay of the sampling before.
        distributed.reseed_for_rank(sampler_rng, rank, salt=state["epoch"])
        first_epoch, gate.steps = state["epoch"] + 1, state["steps"]
        last_loss, spent = state["loss"], state["seconds"]

    def epsilon() -> float:
        if engine is None:
            return math.inf
        return engine.get_epsilon(delta) if engine.accountant.history else 0.0

    if resume_from is not None:
        on_resume({"epoch": first_epoch - 1, "loss": last_loss, "epsilon": epsilon(),
                   "steps": gate.steps})

    started = time.monotonic() - spent
    model.train()
    try:
        for epoch in range(first_epoch, cfg.epochs + 1):
            total, count = 0.0, 0
            with BatchMemoryManager(data_loader=loader, optimizer=gate,
                                    max_physical_batch_size=cfg.physical_batch_size) as batches:
                for ids, mask in batches:
                    if ids.shape[0] == 0:  # Poisson sampling can draw an empty batch
                        if engine is not None:  # the accountant counts it: a noise-only step
                            _zero_gradients(optimizer, cfg.privacy.grad_sample_mode)
                            gate.step()
                            gate.zero_grad()
                        continue
                    ids, mask = ids.to(device), mask.to(device)
                    losses = causal_lm.per_sample_loss(model, ids, mask)   # [B]
                    criterion(losses).backward()
                    gate.step()
                    gate.zero_grad()
                    total, count = total + losses.sum().item(), count + len(losses)
                    if max_steps is not None and gate.steps >= max_steps and not gate.skip:
                        break
            last_loss = total / count if count else math.nan
            if checkpoint is not None and rank == 0:
                checkpoints.save(checkpoint, {
                    "fingerprint": fingerprint, "epoch": epoch, "steps": gate.steps,
                    "loss": last_loss, "seconds": time.monotonic() - started,
                    "model": raw.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "accountant": engine.accountant.state_dict() if engine else None,
                    "rng": checkpoints.rng_state(sampler_rng)})
            # After the checkpoint: a kill in between loses this epoch's metrics rather than
            # logging them twice on resume.
            on_epoch_end({"epoch": epoch, "loss": last_loss, "epsilon": epsilon(),
                          "steps": gate.steps})
            if max_steps is not None and gate.steps >= max_steps:
                break
    finally:
        on_end({"epsilon": epsilon(), "delta": delta, "steps": gate.steps})
    result = TrainResult(
        epsilon=epsilon(), delta=delta,
        noise_multiplier=optimizer.noise_multiplier if engine else 0.0,
        sample_rate=sample_rate, steps=gate.steps, epochs=cfg.epochs,
        accountant=cfg.privacy.accountant if engine else "none", private=engine is not None,
        final_loss=last_loss, seconds=time.monotonic() - started,
    )
    return raw, result
