"""Train: DP-SGD (Opacus, Poisson sampling, per-sample clipping) on records serialized as text.

Privacy is switched on in exactly one place, ``_privatize``; the non-private baseline runs the
same loop with the same sampling, so comparisons between the two are honest.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import DataLoader, Dataset

from models import causal_lm, dp_layers
from models.records import RecordCodec
from models.replay import ReplayIndex
from models.tokenizer import ByteTokenizer
from tasks import tracking
from tasks.contract import DataContract, DType, Role
from tasks.errors import PrivacyError
from tasks.storage import write_parquet

log = logging.getLogger(__name__)
# Progress events for a watching CLI; not run logs, so Prefect's API never receives them.
progress = logging.getLogger("privgen.progress")


class PrivacyConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    # ε = 8 is the common ceiling for useful DP language models (e.g. Li et al., 2022).
    target_epsilon: float = Field(default=8.0, gt=0.0, le=100.0)
    # None: 1 / (10·N), safely below the 1/N at which δ stops meaning anything.
    target_delta: float | None = Field(default=None, gt=0.0, lt=1.0)
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    # PRV gives tighter ε than RDP for the same noise (Gopi et al., 2021).
    accountant: Literal["prv", "rdp"] = "prv"


class TrainConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: causal_lm.LMConfig = Field(default_factory=causal_lm.LMConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    epochs: int = Field(default=3, ge=1)
    # Expected (logical) batch under Poisson sampling; DP favours large batches.
    batch_size: int = Field(default=64, ge=1)
    learning_rate: float = Field(default=3e-3, gt=0.0)
    # Held out before training, never seen by it, for perplexity and the privacy audit.
    holdout_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)


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


def pad_batch(items: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence in the batch: [B, T] ids and attention mask."""
    longest = max((len(x) for x in items), default=1)
    ids = torch.full((len(items), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), longest), dtype=torch.long)
    for i, x in enumerate(items):
        ids[i, : len(x)] = x
        mask[i, : len(x)] = 1
    return ids, mask


def encode(df: pd.DataFrame, codec: RecordCodec, tokenizer: ByteTokenizer,
           max_length: int) -> list[list[int]]:
    return [tokenizer.encode(codec.encode(row), max_length) for row in df.to_dict("records")]


def resolve_delta(cfg: PrivacyConfig, n: int) -> float:
    delta = cfg.target_delta if cfg.target_delta is not None else 1.0 / (10 * n)
    if delta >= 1.0 / n:
        raise PrivacyError(
            f"train.privacy.target_delta={delta:g} is not below 1/N = {1 / n:g} for N={n} "
            "training records; lower it"
        )
    return delta


def _privatize(model, optimizer, loader, cfg: TrainConfig, delta: float):
    """The one place DP is switched on: Opacus wraps model, optimizer and Poisson loader."""
    dp_layers.install()
    engine = PrivacyEngine(accountant=cfg.privacy.accountant)
    model, optimizer, loader = engine.make_private_with_epsilon(
        module=model, optimizer=optimizer, data_loader=loader,
        target_epsilon=cfg.privacy.target_epsilon, target_delta=delta, epochs=cfg.epochs,
        max_grad_norm=cfg.privacy.max_grad_norm, poisson_sampling=True,
    )
    return model, optimizer, loader, engine


def train(sequences: list[list[int]], cfg: TrainConfig, tokenizer: ByteTokenizer, seed: int,
          on_epoch_end: Callable[[dict], None] = lambda m: None):
    """Train a fresh model on ``sequences``; returns (unwrapped model, TrainResult)."""
    torch.manual_seed(seed)
    n = len(sequences)
    delta = resolve_delta(cfg.privacy, n)
    model = causal_lm.build(cfg.model, tokenizer)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    loader = DataLoader(SequenceDataset(sequences), batch_size=cfg.batch_size,
                        collate_fn=lambda b: pad_batch(b, tokenizer.pad_id),
                        generator=torch.Generator().manual_seed(seed))
    engine = None
    if cfg.privacy.enabled:
        model, optimizer, loader, engine = _privatize(model, optimizer, loader, cfg, delta)
    else:
        # Same Poisson sampling as the private run, so the baseline differs only in DP.
        loader = DPDataLoader.from_data_loader(loader, generator=loader.generator)
    sample_rate = 1.0 / len(loader)
    started, steps, last_loss = time.monotonic(), 0, math.nan
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        losses = []
        for ids, mask in loader:
            if ids.shape[0] == 0:  # Poisson sampling can draw an empty batch
                continue
            optimizer.zero_grad(set_to_none=True)
            loss = causal_lm.per_sample_loss(model, ids, mask).mean()
            loss.backward()
            optimizer.step()
            steps += 1
            losses.append(loss.item())
        last_loss = float(np.mean(losses)) if losses else math.nan
        eps = engine.get_epsilon(delta) if engine else math.inf
        on_epoch_end({"epoch": epoch, "loss": last_loss, "epsilon": eps, "steps": steps})
    result = TrainResult(
        epsilon=engine.get_epsilon(delta) if engine else math.inf, delta=delta,
        noise_multiplier=optimizer.noise_multiplier if engine else 0.0,
        sample_rate=sample_rate, steps=steps, epochs=cfg.epochs,
        accountant=cfg.privacy.accountant if engine else "none", private=engine is not None,
        final_loss=last_loss, seconds=time.monotonic() - started,
    )
    return causal_lm.unwrap(model), result


@task(name="train", cache_policy=NO_CACHE)
def train_task(anonymized_path: str, contract: DataContract, cfg: TrainConfig, seed: int,
               out_dir: str, run_id: str) -> dict:
    logger = get_run_logger()
    out = Path(out_dir)
    df = pd.read_parquet(anonymized_path)
    codec = codec_for(contract, list(df.columns))
    train_df, holdout_df = split_holdout(df, cfg.holdout_fraction, seed)
    holdout_path = write_parquet(holdout_df, out / "holdout.parquet")
    train_path = write_parquet(train_df, out / "train.parquet")
    tokenizer = ByteTokenizer()
    sequences = encode(train_df, codec, tokenizer, cfg.model.block_size)
    tracking.log_params(run_id, {
        "train.records": len(sequences), "train.holdout_records": len(holdout_df),
        "train.epochs": cfg.epochs, "train.batch_size": cfg.batch_size,
        "train.learning_rate": cfg.learning_rate, "privacy.enabled": cfg.privacy.enabled,
        "privacy.target_epsilon": cfg.privacy.target_epsilon,
        "privacy.max_grad_norm": cfg.privacy.max_grad_norm,
        "privacy.accountant": cfg.privacy.accountant,
        **{f"model.{k}": v for k, v in cfg.model.model_dump().items()},
    })

    def on_epoch_end(m: dict) -> None:
        metrics = {"train.loss": m["loss"]}
        if math.isfinite(m["epsilon"]):
            metrics["privacy.epsilon"] = m["epsilon"]
        tracking.log_metrics(run_id, metrics, step=m["epoch"])
        logger.info("epoch %d/%d: loss %.3f, ε %.2f, %d steps", m["epoch"], cfg.epochs,
                    m["loss"], m["epsilon"], m["steps"])
        progress.info("epoch", extra={"stage": "train",
                                      "progress": (m["epoch"], cfg.epochs, "epochs")})

    model, result = train(sequences, cfg, tokenizer, seed, on_epoch_end)
    meta = {"codec": codec.to_dict(), "tokenizer": "bytes",
            "model_config": cfg.model.model_dump(), "train": asdict(result)}
    # Built from the same anonymized text the model saw; lets generation reject copies of it.
    text_cols = [c.name for c in contract.with_role(Role.TEXT) if c.name in train_df.columns]
    replay = ReplayIndex.build(t for c in text_cols for t in train_df[c])
    meta["replay"] = {"ngram_words": replay.n, "ngrams": len(replay), "columns": text_cols}
    model_dir = causal_lm.save(model, out / "model", meta, extra=replay.save)
    tracking.log_params(run_id, {"privacy.target_delta": result.delta,
                                 "privacy.noise_multiplier": result.noise_multiplier,
                                 "privacy.sample_rate": result.sample_rate,
                                 "privacy.steps": result.steps})
    create_markdown_artifact(key="train-report", markdown=(
        f"# Training\n\n- records: {len(sequences)}\n- steps: {result.steps}\n"
        f"- private: {result.private}\n- ε: {result.epsilon:.3f} (target "
        f"{cfg.privacy.target_epsilon}), δ: {result.delta:.2e}, accountant: {result.accountant}\n"
        f"- noise multiplier σ: {result.noise_multiplier:.3f}, sample rate: "
        f"{result.sample_rate:.4f}\n- final loss: {result.final_loss:.3f}\n"
        f"- time: {result.seconds:.0f} s\n"))
    return {"model_dir": str(model_dir), "holdout_path": str(holdout_path),
            "train_path": str(train_path), **asdict(result)}
