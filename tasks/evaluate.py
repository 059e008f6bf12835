"""Evaluate: held-out perplexity and a few PII-filtered samples of the trained model."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import torch
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from models import causal_lm
from models import tokenizer as tokenizers
from models.records import RecordCodec, RecordGrammar
from tasks import pii, tracking
from tasks.storage import write_json
from tasks.train import encode, pad_batch


class EvaluateConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    samples: int = Field(default=8, ge=0, le=1000)
    batch_size: int = Field(default=64, ge=1)


@torch.no_grad()
def perplexity(model, sequences: list[list[int]], pad_id: int, batch_size: int = 64) -> float:
    """exp of the mean next-token NLL over every held-out token (not a mean of per-record ppl)."""
    model.eval()
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(sequences), batch_size):
        batch = [torch.tensor(s) for s in sequences[start : start + batch_size]]
        ids, mask = pad_batch(batch, pad_id)
        tokens = (mask[:, 1:].sum(1)).clamp(min=1)
        nll = causal_lm.per_sample_loss(model, ids, mask) * tokens
        total_nll += float(nll.sum())
        total_tokens += int(tokens.sum())
    return math.exp(total_nll / max(total_tokens, 1))


def clean_samples(texts: list[str]) -> tuple[list[str], int]:
    """Drop any sample in which the pattern scanner finds PII; returns (kept, dropped count)."""
    kept = [t for t in texts if not pii.pattern_spans(t)]
    return kept, len(texts) - len(kept)


def evaluate(model_dir: Path, holdout: pd.DataFrame, cfg: EvaluateConfig, seed: int) -> dict:
    model, meta = causal_lm.load(model_dir)
    codec = RecordCodec.from_dict(meta["codec"])
    tokenizer = tokenizers.for_saved(model_dir, meta)
    block = meta["model_config"]["block_size"]
    sequences = encode(holdout, codec, tokenizer, block)
    ppl = perplexity(model, sequences, tokenizer.pad_id, cfg.batch_size)
    grammar = (RecordGrammar(codec, tokenizer.eos_id, tokenizer.vocab_size, prompt_length=1)
               if tokenizer.byte_level else None)
    texts = causal_lm.generate(model, tokenizer, cfg.samples, seed=seed,
                               max_new_tokens=block - 1, grammar=grammar)
    samples, dropped = clean_samples(texts)
    parsed = sum(codec.decode(t) is not None for t in texts)
    return {"perplexity": ppl, "holdout_records": len(sequences), "samples": samples,
            "samples_dropped_for_pii": dropped,
            "sample_parse_rate": parsed / len(texts) if texts else math.nan}


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(model_dir: str, holdout_path: str, cfg: EvaluateConfig, seed: int,
                  out_dir: str, run_id: str) -> dict:
    result = evaluate(Path(model_dir), pd.read_parquet(holdout_path), cfg, seed)
    write_json(result, Path(out_dir) / "evaluation.json")
    tracking.log_metrics(run_id, {"eval.perplexity": result["perplexity"],
                                  "eval.sample_parse_rate": result["sample_parse_rate"]})
    tracking.log_text(run_id, "\n".join(result["samples"]) + "\n", "samples/samples.txt")
    tracking.log_dict(run_id, {k: v for k, v in result.items() if k != "samples"},
                      "reports/evaluation.json")
    body = "\n".join(f"- `{s[:200]}`" for s in result["samples"])
    create_markdown_artifact(key="evaluate-report", markdown=(
        f"# Evaluation\n\n- held-out perplexity: {result['perplexity']:.3f} over "
        f"{result['holdout_records']} records\n- sample parse rate: "
        f"{result['sample_parse_rate']:.0%}\n\n## Samples (PII-filtered)\n\n{body}\n"))
    get_run_logger().info("held-out perplexity %.3f", result["perplexity"])
    return {k: v for k, v in result.items() if k != "samples"}
