"""The train stage for the causal LM: records serialized by the codec, DP-SGD (``tasks.dpsgd``)
with checkpoints, resume and canaries, and the model folder written with its tokenizer, replay
index, release rules and ``family.json`` (``models.causal_lm_family``)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from prefect.artifacts import create_markdown_artifact

from models import accounting, causal_lm
from models.base import FitResult
from models.causal_lm_family import CausalLM, spec_of
from models.records import RELEASE_FILE
from models.replay import ReplayIndex
from tasks import composition, distributed, release, tracking
from tasks.contract import DataContract
from tasks.dpsgd import _composed, codec_for, encode, load_tokenizer, train
from tasks.train_family import Stage

if TYPE_CHECKING:
    from tasks.train_config import TrainConfig


def train_causal_lm(stage: Stage, train_df: pd.DataFrame, released: DataContract,
                    cfg: TrainConfig, seed: int, out: Path, text_cols: list[str],
                    resume: bool, domain: dict | None) -> dict:
    """Train on ``train_df`` (canaries already planted) and save to ``out / "model"``.
    Returns the train stage's result keys that depend on the model (``tasks.train``)."""
    logger, prefix = stage.logger, stage.prefix
    checkpoint = out / "checkpoint.pt"
    # A generalized integer quasi-identifier is released as bands ("30-39"): the codec and
    # the grammar follow the released type, not the raw one (issue 12).
    codec = codec_for(released, list(train_df.columns))
    tokenizer = load_tokenizer(cfg.model)
    sequences = encode(train_df, codec, tokenizer, cfg.model.block_size)
    spend = composition.DomainSpend.from_dict((domain or {}).get("spend"))
    sgd_cfg, total = cfg, None  # total: ε after some steps, composed with the domain estimates
    if spend.releases and cfg.privacy.enabled:
        sgd_cfg, total = _composed(cfg, spend, domain["sgd_epsilon"], len(sequences))
    stage.log_params({
        "train.records": len(sequences), "train.epochs": cfg.epochs,
        "train.batch_size": cfg.batch_size, "train.learning_rate": cfg.learning_rate,
        "privacy.grad_sample_mode": cfg.privacy.grad_sample_mode,
        "train.physical_batch_size": cfg.physical_batch_size,
        **{f"model.{k}": v for k, v in cfg.model.model_dump().items()},
        # Never fit on the private data: bytes are fixed, a pretrained tokenizer is kept as is.
        "tokenizer": "bytes" if tokenizer.byte_level else "pretrained, not refit",
        "model.embeddings": causal_lm.embedding_policy(cfg.model),
    })

    def on_epoch_end(m: dict) -> None:
        if total is not None:
            m = m | {"epsilon": total(m["steps"])}
        stage.progress(m, cfg.epochs)

    def on_end(m: dict) -> None:  # runs even when training fails: what was spent is on record
        if total is not None:
            m = m | {"epsilon": total(m["steps"])}
        if math.isfinite(m["epsilon"]):
            stage.log_metrics({"privacy.epsilon_spent": m["epsilon"], "privacy.delta": m["delta"],
                               "privacy.steps_taken": m["steps"]}, step=m["steps"])

    def on_resume(m: dict) -> None:  # killed between the checkpoint and its metrics
        logger.info("resuming after epoch %d (ε %.2f so far)", m["epoch"], m["epsilon"])
        if m["epoch"] not in tracking.metric_steps(stage.run_id, prefix + "train.loss"):
            on_epoch_end(m)

    resume_from = checkpoint if resume and checkpoint.is_file() else None
    # Across processes the same loop runs in torchrun's workers (tasks.distributed).
    runner = distributed.train_lm if distributed.check(
        "causal_lm", cfg.distributed, cfg.privacy.enabled) else train
    stage.log_params({"train.world_size": cfg.distributed.world_size
                      if runner is not train else 1})
    if runner is not train:
        logger.info("training in %d processes (torchrun; one DP-SGD accountant over the "
                    "global batch)", cfg.distributed.world_size)
    model, result = runner(sequences, sgd_cfg, tokenizer, seed, on_epoch_end, on_end=on_end,
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
    stage.log_params({"privacy.target_delta": result.delta,
                      "privacy.noise_multiplier": result.noise_multiplier,
                      "privacy.sample_rate": result.sample_rate, "privacy.steps": result.steps})
    check = None
    if result.private:
        check = composition.pld_epsilon(
            (result.noise_multiplier, result.sample_rate, result.steps), spend, result.delta)
        stage.log_metrics({"privacy.epsilon_pld": check})
        # RDP's ε is a looser upper bound, so only an understatement is suspect.
        if check > 1.05 * result.epsilon:
            logger.warning("ε %.3f (%s) is more than 5 %% below the PLD accountant's %.3f",
                           result.epsilon, result.accountant, check)
    events = [accounting.gaussian(result.noise_multiplier, result.sample_rate, result.steps)] \
        if result.private else []
    vocabulary = ("bytes: fixed, never fit on the data" if tokenizer.byte_level
                  else f"the pretrained tokenizer of {cfg.model.pretrained}, not refit")
    params = {"noise_multiplier": result.noise_multiplier, "sample_rate": result.sample_rate,
              "steps": result.steps, "epochs": result.epochs, "vocabulary": vocabulary,
              "embeddings": causal_lm.embedding_policy(cfg.model)}
    gen = CausalLM(cfg.model)
    rules = Path(model_dir) / RELEASE_FILE
    gen.spec = spec_of(codec, json.loads(rules.read_text()) if rules.is_file() else None, meta)
    gen.fit_result = FitResult(
        epsilon=result.epsilon, delta=result.delta, accountant=result.accountant,
        mechanism="dp-sgd" if result.private else "sgd (non-private)", private=result.private,
        events=events, params=params, seconds=result.seconds, final_loss=result.final_loss,
        epsilon_check=check)
    gen.save(model_dir)
    create_markdown_artifact(key=f"{prefix.replace('.', '-')}train-report", markdown=(
        f"# Training{f' ({prefix[:-1]})' if prefix else ''}\n\n- family: causal_lm\n"
        f"- records: {len(sequences)}\n- steps: {result.steps}\n"
        f"- private: {result.private}\n- ε: {result.epsilon:.3f} (target "
        f"{cfg.privacy.target_epsilon}), δ: {result.delta:.2e}, accountant: {result.accountant}\n"
        f"- noise multiplier σ: {result.noise_multiplier:.3f}, sample rate: "
        f"{result.sample_rate:.4f}\n- final loss: {result.final_loss:.3f}\n"
        f"- time: {result.seconds:.0f} s\n"))
    return {"model_dir": str(model_dir), "epsilon_pld": check, "epsilon_sgd": epsilon_sgd,
            "domain_spend": asdict(spend), **asdict(result),
            "mechanism": gen.fit_result.mechanism, "events": events, "params": params}
