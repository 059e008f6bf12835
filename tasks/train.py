"""Train: DP-SGD (Opacus, Poisson sampling, per-sample clipping) on records serialized as text.

Privacy is switched on in exactly one place, ``_privatize``; the non-private baseline runs the
same loop with the same sampling, so comparisons between the two are honest.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import torch
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from opacus.utils.batch_memory_manager import BatchMemoryManager
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch.utils.data import DataLoader, Dataset

from models import causal_lm, dp_layers
from models import tokenizer as tokenizers
from models.records import RecordCodec
from models.replay import ReplayIndex
from models.tokenizer import Tokenizer
from tasks import composition, release, tracking
from tasks.audit import AuditConfig, make_canaries
from tasks.contract import DataContract, DType, Role
from tasks.errors import ConfigError, PrivacyError
from tasks.storage import write_json, write_parquet

if TYPE_CHECKING:  # the anonymize stage's scrubbing dependencies are heavy
    from tasks.anonymize import AnonymizeConfig

# Progress events for a watching CLI; not run logs, so Prefect's API never receives them.
progress = logging.getLogger("privgen.progress")


class PrivacyConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    # ε = 8 is the common ceiling for useful DP language models (e.g. Li et al., 2022).
    target_epsilon: float = Field(default=8.0, gt=0.0, le=100.0)
    # Preflight refuses plans above this; raise it only with a written reason.
    epsilon_ceiling: float = Field(default=10.0, gt=0.0)
    # None: 1 / (10·N), safely below the 1/N at which δ stops meaning anything.
    target_delta: float | None = Field(default=None, gt=0.0, lt=1.0)
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    # PRV gives tighter ε than RDP for the same noise (Gopi et al., 2021).
    accountant: Literal["prv", "rdp"] = "prv"
    # "ghost": per-sample gradient norms without per-sample gradients (Li et al., 2022);
    # the clipped update is the same (tests/unit/test_dp_correctness.py), see benchmarks/dp_step.py.
    grad_sample_mode: Literal["hooks", "ghost"] = "hooks"
    # The accountant assumes Poisson sampling; fixed-size batches would make its ε a lie.
    poisson_sampling: bool = True
    # Release runs: cryptographically secure noise and sampling (needs torchcsprng).
    secure_mode: bool = False
    # Contract values seen in the private data (``domain: observed``) that generation would keep
    # records to: "dp" estimates them under DP from ``domain_share`` of the budget
    # (tasks/domain.py); "refuse" stops before training, naming what to declare public.
    observed_domains: Literal["dp", "refuse"] = "dp"
    # DP-SGD is calibrated to (1 - share) of target_epsilon; the estimates get the least noise
    # that keeps the composition within target_epsilon, and share/2 of δ for thresholds.
    domain_share: float = Field(default=0.1, gt=0.0, lt=1.0)

    @field_validator("poisson_sampling")
    @classmethod
    def _poisson_only(cls, value: bool) -> bool:
        if not value:
            raise ValueError("must stay true: the accountant's ε assumes Poisson sampling")
        return value

    @field_validator("secure_mode")
    @classmethod
    def _csprng_installed(cls, value: bool) -> bool:
        if value and importlib.util.find_spec("torchcsprng") is None:
            raise ValueError("needs the torchcsprng package (pip install torchcsprng, built for "
                             "your torch version; https://github.com/pytorch/csprng)")
        return value


class TrainConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: causal_lm.LMConfig = Field(default_factory=causal_lm.LMConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    # 10 on the demo (3,000 rows): the same ε = 8 buys held-out perplexity 7.0 against 9.2
    # after 3, and the non-private control trained alike fits its members enough (AUC 0.59
    # against 0.48) for the membership test to show the audit's power; after 3 neither moved.
    epochs: int = Field(default=10, ge=1)
    # Expected (logical) batch under Poisson sampling; DP favours large batches.
    batch_size: int = Field(default=64, ge=1)
    # Largest batch put through the model at once; larger Poisson draws are split and their
    # clipped gradients summed before one noisy step (Opacus' BatchMemoryManager).
    physical_batch_size: int = Field(default=64, ge=1)
    learning_rate: float = Field(default=3e-3, gt=0.0)
    # Held out before training, never seen by it, for perplexity and the privacy audit.
    holdout_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    # "auto": the GPU when torch sees one, else the CPU. Training stays in float32: bf16
    # per-sample gradients lose the precision clipping relies on, and this CPU has no bf16
    # units to gain from.
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _ghost_needs_untied_weights(self) -> TrainConfig:
        if self.privacy.grad_sample_mode == "ghost" and self.model.tie_embeddings:
            raise ValueError("privacy.grad_sample_mode=ghost cannot clip tied embeddings "
                             "(Opacus refuses tied parameters); set model.tie_embeddings=false")
        return self


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


def split_holdout(df: pd.DataFrame, fraction: float,
                  seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    held = rng.random(len(df)) < fraction
    return df[~held].reset_index(drop=True), df[held].reset_index(drop=True)


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
               noise_multiplier: float | None = None):
    """The one place DP is switched on: Opacus wraps model, optimizer and Poisson loader.

    Returns (model, optimizer, criterion, loader, engine); ``criterion`` turns per-sample losses
    into what ``.backward()`` is called on. σ comes from the ε target unless ``noise_multiplier``
    is given (the correctness test sets it to 0).
    """
    dp_layers.install()
    p = cfg.privacy
    engine = PrivacyEngine(accountant=p.accountant, secure_mode=p.secure_mode)
    common = dict(module=model, optimizer=optimizer, data_loader=loader,
                  max_grad_norm=p.max_grad_norm, poisson_sampling=p.poisson_sampling,
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


def _save_checkpoint(path: Path, state: dict) -> None:
    """Temp file + rename: a kill mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _rng_state(sampler_generator: torch.Generator | None) -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "python": random.getstate(),
            "sampler": sampler_generator.get_state() if sampler_generator else None}


def _restore_rng(state: dict, sampler_generator: torch.Generator | None) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if sampler_generator is not None and state["sampler"] is not None:
        sampler_generator.set_state(state["sampler"])


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
    """
    torch.manual_seed(seed)
    n = len(sequences)
    delta = resolve_delta(cfg.privacy, n)
    device = torch.device("cuda" if cfg.device == "cuda" or (
        cfg.device == "auto" and torch.cuda.is_available()) else "cpu")
    model = build_model(cfg.model, tokenizer).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    loader = DataLoader(SequenceDataset(sequences), batch_size=cfg.batch_size,
                        collate_fn=lambda b: pad_batch(b, tokenizer.pad_id),
                        generator=torch.Generator().manual_seed(seed))
    engine = None
    if cfg.privacy.enabled:
        model, optimizer, criterion, loader, engine = _privatize(model, optimizer, loader, cfg,
                                                                 delta)
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
    fingerprint = {"config": cfg.model_dump(mode="json"), "records": n, "seed": seed}
    first_epoch, last_loss, spent = 1, math.nan, 0.0
    if resume_from is not None:
        # Tensors and plain values only, read on the CPU (RNG states must stay there); the
        # model and optimizer copy theirs onto the training device. On a GPU the CUDA noise
        # generator is not checkpointed: the resumed weights differ, the ε does not.
        state = torch.load(resume_from, weights_only=True, map_location="cpu")
        if state["fingerprint"] != fingerprint:
            raise PrivacyError(f"{resume_from}: checkpoint was written for another config, data "
                               "size or seed; resume with the run's own settings")
        causal_lm.unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if engine is not None:
            engine.accountant.load_state_dict(state["accountant"])
        _restore_rng(state["rng"], sampler_rng)
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
            if checkpoint is not None:
                _save_checkpoint(checkpoint, {
                    "fingerprint": fingerprint, "epoch": epoch, "steps": gate.steps,
                    "loss": last_loss, "seconds": time.monotonic() - started,
                    "model": causal_lm.unwrap(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "accountant": engine.accountant.state_dict() if engine else None,
                    "rng": _rng_state(sampler_rng)})
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
    return causal_lm.unwrap(model), result


def plant_canaries(train_df: pd.DataFrame, text_column: str, cfg: AuditConfig,
                   seed: int) -> tuple[pd.DataFrame, dict]:
    """Append ``cfg.n_canaries`` fake records, each ``cfg.canary_repeats`` times: one training
    row's other fields with a random secret in ``text_column``. Returns the frame and what the
    audit needs to score them (the secrets are random, never personal data)."""
    rng = np.random.default_rng([seed, 0xCA7A])
    canaries = make_canaries(cfg.n_canaries, rng, cfg.canary_template, cfg.canary_digits)
    base = train_df.iloc[int(rng.integers(len(train_df)))].to_dict()
    base = {k: None if pd.isna(v) else str(v) for k, v in base.items()}
    fake = pd.DataFrame([{**base, text_column: t} for t in canaries.texts
                         for _ in range(cfg.canary_repeats)]).astype(train_df.dtypes.to_dict(),
                                                                     errors="ignore")
    spec = {"secrets": list(canaries.secrets), "template": canaries.template,
            "digits": canaries.digits, "base_row": base, "text_column": text_column,
            "repeats": cfg.canary_repeats}
    return pd.concat([train_df, fake], ignore_index=True), spec


@task(name="train", cache_policy=NO_CACHE)
def train_task(anonymized_path: str, contract: DataContract, cfg: TrainConfig, seed: int,
               out_dir: str, run_id: str, resume: bool = False, audit: AuditConfig | None = None,
               prefix: str = "", anonymize: AnonymizeConfig | None = None,
               domain: dict | None = None) -> dict:
    """``anonymize``: the settings that made the anonymized data; with them, the model's
    release rules (``release.json``: each field's released type, values and form) are built
    from ``contract`` as the anonymize stage released it, else ``contract`` is taken to describe
    the data as released. ``resume``: continue from ``out_dir``'s checkpoint when there is
    one (same run, same config), keeping its accountant history; otherwise train from scratch.
    ``audit``: plant its canaries in the training data (``canaries.json`` in ``out_dir`` says
    which). ``prefix``: put before every MLflow key, so a control model can share the run.
    ``domain``: the domain stage's result (``tasks.domain``): its spend is composed with
    DP-SGD's into every ε reported, and DP-SGD is calibrated to the ε it leaves."""
    logger = get_run_logger()
    out = Path(out_dir)
    checkpoint = out / "checkpoint.pt"

    def log_params(params: dict) -> None:
        tracking.log_params(run_id, {prefix + k: v for k, v in params.items()})

    def log_metrics(metrics: dict, step: int | None = None) -> None:
        tracking.log_metrics(run_id, {prefix + k: v for k, v in metrics.items()}, step=step)

    df = pd.read_parquet(anonymized_path)
    # A generalized integer quasi-identifier is released as bands ("30-39"): the codec and
    # the grammar follow the released type, not the raw one (issue 12).
    released = contract if anonymize is None else release.released_contract(contract, anonymize)
    codec = codec_for(released, list(df.columns))
    train_df, holdout_df = split_holdout(df, cfg.holdout_fraction, seed)
    holdout_path = write_parquet(holdout_df, out / "holdout.parquet")
    train_path = write_parquet(train_df, out / "train.parquet")  # members, canaries excluded
    text_cols = [c.name for c in contract.with_role(Role.TEXT) if c.name in train_df.columns]
    canaries_path = None
    if audit is not None and audit.enabled and text_cols:
        train_df, spec = plant_canaries(train_df, text_cols[0], audit, seed)
        canaries_path = str(write_json(spec, out / "canaries.json"))
    tokenizer = load_tokenizer(cfg.model)
    sequences = encode(train_df, codec, tokenizer, cfg.model.block_size)
    spend = composition.DomainSpend.from_dict((domain or {}).get("spend"))
    sgd_cfg, total = cfg, None  # total: ε after some steps, composed with the domain estimates
    if spend.releases and cfg.privacy.enabled:
        sgd_cfg, total = _composed(cfg, spend, domain["sgd_epsilon"], len(sequences))
    log_params({
        "train.records": len(sequences), "train.holdout_records": len(holdout_df),
        "train.epochs": cfg.epochs, "train.batch_size": cfg.batch_size,
        "train.learning_rate": cfg.learning_rate, "privacy.enabled": cfg.privacy.enabled,
        "privacy.target_epsilon": cfg.privacy.target_epsilon,
        "privacy.max_grad_norm": cfg.privacy.max_grad_norm,
        "privacy.accountant": cfg.privacy.accountant,
        "privacy.grad_sample_mode": cfg.privacy.grad_sample_mode,
        "privacy.secure_mode": cfg.privacy.secure_mode,
        "train.physical_batch_size": cfg.physical_batch_size,
        **{f"model.{k}": v for k, v in cfg.model.model_dump().items()},
        # Never fit on the private data: bytes are fixed, a pretrained tokenizer is kept as is.
        "tokenizer": "bytes" if tokenizer.byte_level else "pretrained, not refit",
        "model.embeddings": causal_lm.embedding_policy(cfg.model),
        "audit.canaries": 0 if canaries_path is None else audit.n_canaries * audit.canary_repeats,
    })

    def on_epoch_end(m: dict) -> None:
        if total is not None:
            m = m | {"epsilon": total(m["steps"])}
        metrics = {"train.loss": m["loss"]}
        if math.isfinite(m["epsilon"]):
            metrics["privacy.epsilon"] = m["epsilon"]
        log_metrics(metrics, step=m["epoch"])
        logger.info(prefix + "epoch %d/%d: loss %.3f, ε %.2f, %d steps", m["epoch"], cfg.epochs,
                    m["loss"], m["epsilon"], m["steps"])
        progress.info("epoch", extra={"stage": prefix + "train",
                                      "progress": (m["epoch"], cfg.epochs, "epochs")})

    def on_end(m: dict) -> None:  # runs even when training fails: what was spent is on record
        if total is not None:
            m = m | {"epsilon": total(m["steps"])}
        if math.isfinite(m["epsilon"]):
            log_metrics({"privacy.epsilon_spent": m["epsilon"], "privacy.delta": m["delta"],
                         "privacy.steps_taken": m["steps"]}, step=m["steps"])

    def on_resume(m: dict) -> None:  # killed between the checkpoint and its metrics
        logger.info("resuming after epoch %d (ε %.2f so far)", m["epoch"], m["epsilon"])
        if m["epoch"] not in tracking.metric_steps(run_id, prefix + "train.loss"):
            on_epoch_end(m)

    resume_from = checkpoint if resume and checkpoint.is_file() else None
    model, result = train(sequences, sgd_cfg, tokenizer, seed, on_epoch_end, on_end=on_end,
                          checkpoint=checkpoint, resume_from=resume_from, on_resume=on_resume)
    epsilon_sgd = result.epsilon
    if total is not None:
        result.epsilon = total(result.steps)
    meta = {"codec": codec.to_dict(),
            "tokenizer": "bytes" if tokenizer.byte_level else "pretrained",
            "tokenizer_fit_on_private_data": False,
            "embeddings": causal_lm.embedding_policy(cfg.model),
            "model_config": cfg.model.model_dump(), "train": asdict(result)}
    # Built from the same anonymized text the model saw; lets generation reject copies of it.
    replay = ReplayIndex.build(t for c in text_cols for t in train_df[c])
    meta["replay"] = {"ngram_words": replay.n, "ngrams": len(replay), "columns": text_cols}

    def extra(directory: Path) -> None:
        replay.save(directory)
        tokenizer.save(directory)
        release.write(released, codec.fields, directory)

    model_dir = causal_lm.save(model, out / "model", meta, extra=extra)
    log_params({"privacy.target_delta": result.delta,
                "privacy.noise_multiplier": result.noise_multiplier,
                "privacy.sample_rate": result.sample_rate, "privacy.steps": result.steps})
    check = None
    if result.private:
        check = composition.pld_epsilon(
            (result.noise_multiplier, result.sample_rate, result.steps), spend, result.delta)
        log_metrics({"privacy.epsilon_pld": check})
        # RDP's ε is a looser upper bound, so only an understatement is suspect.
        if check > 1.05 * result.epsilon:
            logger.warning("ε %.3f (%s) is more than 5 %% below the PLD accountant's %.3f",
                           result.epsilon, result.accountant, check)
    create_markdown_artifact(key=f"{prefix.replace('.', '-')}train-report", markdown=(
        f"# Training{f' ({prefix[:-1]})' if prefix else ''}\n\n"
        f"- records: {len(sequences)}\n- steps: {result.steps}\n"
        f"- private: {result.private}\n- ε: {result.epsilon:.3f} (target "
        f"{cfg.privacy.target_epsilon}), δ: {result.delta:.2e}, accountant: {result.accountant}\n"
        f"- noise multiplier σ: {result.noise_multiplier:.3f}, sample rate: "
        f"{result.sample_rate:.4f}\n- final loss: {result.final_loss:.3f}\n"
        f"- time: {result.seconds:.0f} s\n"))
    return {"model_dir": str(model_dir), "holdout_path": str(holdout_path),
            "train_path": str(train_path), "canaries_path": canaries_path, "epsilon_pld": check,
            "epsilon_sgd": epsilon_sgd, "domain_spend": asdict(spend),
            **asdict(result)}
