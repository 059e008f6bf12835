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
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LogitsProcessor,
)

from models.tokenizer import META_FILE, ByteTokenizer, Tokenizer


class LoraSettings(BaseModel):
    """Low-rank adapters (peft) on a frozen pretrained model: only the adapters are trained,
    clipped and noised, which makes DP fine-tuning of larger models affordable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    r: int = Field(default=8, ge=1)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    # GPT-2's attention and MLP projections (transformers' Conv1D layers).
    target_modules: tuple[str, ...] = ("c_attn", "c_proj", "c_fc")


class LMConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # A GPT-2-family model to fine-tune: a local folder in save_pretrained layout, or a hub
    # name where the network allows. None builds a fresh model from the fields below, which a
    # pretrained model's own config replaces (block_size still bounds the record length).
    pretrained: str | None = None
    lora: LoraSettings | None = None
    # Small enough that DP-SGD over the 3,000 demo records takes about a minute on 2 CPU cores.
    n_layer: int = Field(default=2, ge=1)
    n_head: int = Field(default=4, ge=1)
    n_embd: int = Field(default=64, ge=8)
    # Tokens per record: the demo's serialized records are 150–450 bytes long.
    block_size: int = Field(default=384, ge=16)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    # Tied input/output embeddings would give one weight two per-sample gradients under Opacus:
    # false unties them (a pretrained model's output layer starts as a copy of its embedding);
    # true keeps them tied and frozen.
    tie_embeddings: bool = False

    @model_validator(mode="after")
    def _heads_divide_width(self) -> LMConfig:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")
        if self.lora is not None and self.pretrained is None:
            raise ValueError("lora adapts a pretrained model; set model.pretrained too")
        return self


def build(cfg: LMConfig, tokenizer: Tokenizer) -> torch.nn.Module:
    """A fresh model from ``cfg``, or the pretrained one made ready for DP-SGD (embeddings untied
    or frozen, adapters added); ``embedding_policy`` says which, for the record."""
    if cfg.pretrained is not None:
        return _pretrained(cfg)
    config = GPT2Config(
        vocab_size=tokenizer.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd,
        n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout, bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id,
        tie_word_embeddings=cfg.tie_embeddings,
    )
    model = GPT2LMHeadModel(config)
    if cfg.tie_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    return model


def _pretrained(cfg: LMConfig) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(cfg.pretrained)
    positions = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    if cfg.block_size > positions:
        raise ValueError(f"block_size {cfg.block_size} exceeds the pretrained model's "
                         f"{positions} positions")
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is not None and head.weight is embedding.weight:
        if cfg.tie_embeddings:
            embedding.weight.requires_grad_(False)
        else:
            head.weight = torch.nn.Parameter(embedding.weight.detach().clone())
            model.config.tie_word_embeddings = False
    if cfg.lora is not None:
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(
            r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
            target_modules=list(cfg.lora.target_modules), bias="none",
            # GPT-2's Conv1D layers store their weight transposed ([in, out]).
            fan_in_fan_out=model.config.model_type == "gpt2"))
    return model.train()  # from_pretrained hands it over in eval mode


def embedding_policy(cfg: LMConfig) -> str:
    """How the model's embeddings were made safe for per-sample clipping."""
    if cfg.lora is not None:
        return "frozen (only LoRA adapters train)"
    return "tied, frozen" if cfg.tie_embeddings else "untied"


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
    """Sample ``n`` sequences in batches; deterministic for a given seed and batch size.

    privgen's own loop (``models.sampling``): a preallocated KV cache and finished rows dropped
    as they end; for the demo model about 2x Hugging Face's batched ``model.generate`` and 25x
    one call per record (benchmarks/generation.py)."""
    from models import sampling

    return sampling.generate(model, tokenizer, n, seed=seed, max_new_tokens=max_new_tokens,
                             temperature=temperature, top_k=top_k, top_p=top_p,
                             batch_size=batch_size, grammar=grammar)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The HF model inside Opacus' GradSampleModule (its ``_module.`` prefix is a trap)."""
    while hasattr(model, "_module"):
        model = model._module
    return model


def plain(model: torch.nn.Module) -> torch.nn.Module:
    """The model as generation loads it: unwrapped, LoRA adapters merged into the weights."""
    model = unwrap(model)
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def save(model: torch.nn.Module, directory: Path, meta: dict, extra=lambda tmp: None) -> Path:
    """Weights with the config that built them (``save_pretrained``) plus privgen's metadata,
    written to a temp folder and renamed into place so a reader never sees half a model."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        plain(model).save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        extra(tmp)  # further files that must travel with the weights
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def load(directory: Path) -> tuple[torch.nn.Module, dict]:
    directory = Path(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True)
    model.eval()
    return model, json.loads((directory / META_FILE).read_text())
