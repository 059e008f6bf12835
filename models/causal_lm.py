"""A causal language model on the Hugging Face GPT-2 architecture, built from a config.

Adapted for DP-SGD: position ids are per sample ([B, T]) so Opacus sees a batch dimension on the
position embedding, the output embedding is untied from the input one by default (a tied weight
would receive two per-sample gradients), and the loss is a per-sample mean so clipping bounds
each record's contribution.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from transformers import GPT2Config, GPT2LMHeadModel, LogitsProcessor, LogitsProcessorList

from models.tokenizer import ByteTokenizer

META_FILE = "privgen.json"


class LMConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Small enough that DP-SGD over the 3,000 demo records takes about a minute on 2 CPU cores.
    n_layer: int = Field(default=2, ge=1)
    n_head: int = Field(default=4, ge=1)
    n_embd: int = Field(default=64, ge=8)
    # Bytes per record: the demo's serialized records are 150–450 bytes long.
    block_size: int = Field(default=384, ge=16)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    # Tied input/output embeddings would give one weight two per-sample gradients under Opacus.
    tie_embeddings: bool = False

    @model_validator(mode="after")
    def _heads_divide_width(self) -> LMConfig:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")
        return self


def build(cfg: LMConfig, tokenizer: ByteTokenizer) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=tokenizer.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd,
        n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout, bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id,
        tie_word_embeddings=cfg.tie_embeddings,
    )
    return GPT2LMHeadModel(config)


def per_sample_loss(model: torch.nn.Module, input_ids: torch.Tensor,
                    attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each sequence: shape [B]."""
    b, t = input_ids.shape
    # [B, T], not [1, T]; materialised, as Opacus' embedding norm sampler calls .view() on it
    position_ids = torch.arange(t, device=input_ids.device).repeat(b, 1)
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=position_ids).logits                      # [B, T, V]
    targets = input_ids[:, 1:]                                            # [B, T-1]
    mask = attention_mask[:, 1:].to(logits.dtype)
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, reduction="none")  # [B, T-1]
    return (nll * mask).sum(1) / mask.sum(1).clamp(min=1)


@torch.no_grad()
def generate(model: GPT2LMHeadModel, tokenizer: ByteTokenizer, n: int, *, seed: int,
             max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, batch_size: int = 128,
             grammar: LogitsProcessor | None = None) -> list[str]:
    """Sample ``n`` sequences in batches with the KV cache; deterministic for a given seed."""
    model.eval()
    prompt = [tokenizer.bos_id]
    processors = LogitsProcessorList([grammar] if grammar else [])
    texts: list[str] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, n, batch_size):
            size = min(batch_size, n - start)
            input_ids = torch.tensor([prompt] * size)
            out = model.generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                do_sample=True, temperature=temperature, top_k=top_k or 0,
                top_p=top_p if top_p is not None else 1.0, max_new_tokens=max_new_tokens,
                eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id,
                logits_processor=processors,
            )
            for row in out[:, 1:].tolist():
                texts.append(tokenizer.decode(row))
    return texts


def unwrap(model: torch.nn.Module) -> GPT2LMHeadModel:
    """The plain HF model inside Opacus' GradSampleModule (its ``_module.`` prefix is a trap)."""
    while hasattr(model, "_module"):
        model = model._module
    return model


def save(model: torch.nn.Module, directory: Path, meta: dict, extra=lambda tmp: None) -> Path:
    """Weights with the config that built them (``save_pretrained``) plus privgen's metadata,
    written to a temp folder and renamed into place so a reader never sees half a model."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        unwrap(model).save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        extra(tmp)  # further files that must travel with the weights
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def load(directory: Path) -> tuple[GPT2LMHeadModel, dict]:
    directory = Path(directory)
    model = GPT2LMHeadModel.from_pretrained(directory, local_files_only=True)
    model.eval()
    return model, json.loads((directory / META_FILE).read_text())
