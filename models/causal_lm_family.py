"""The causal language model (GPT-2 architecture, ``models.causal_lm``) as a generator family:
a record is one line of text (``models.records``), sampled under the record grammar with the
released forms and the caller's conditions forced, then parsed back into a row.

Training is the train stage's DP-SGD loop (``tasks.dpsgd``, with its checkpoints, resume and
canaries); this class reads and samples the model folder it writes, and writes ``family.json``
beside it so every stage loads it through ``models.base.load``."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from models import causal_lm
from models import tokenizer as tokenizers
from models.base import FieldSpec, Generator, Proposal, TableSpec
from models.records import RELEASE_FILE, RecordCodec, RecordGrammar
from models.replay import ReplayIndex

# Sampling settings when a caller sets none (tasks.draw.SAMPLING holds the stage defaults).
DEFAULT_SAMPLING = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "batch_size": 128}


class CausalLM(Generator):
    """A GPT-2-style language model over serialized records (Radford et al. 2019), trained
    with DP-SGD (Abadi et al. 2016) by the train stage. ``config``: its ``LMConfig``."""

    family = "causal_lm"
    config_class = causal_lm.LMConfig
    has_log_prob = True

    def __init__(self, config: Any = None):
        super().__init__(config)
        self.model: torch.nn.Module | None = None
        self.meta: dict = {}
        self.codec: RecordCodec | None = None
        self.tokenizer = None
        self.replay: ReplayIndex | None = None
        # The release rules the model was trained under (release.json); None for old models.
        self.release: dict | None = None

    # -- folder ------------------------------------------------------------------------------
    def fit(self, table, spec, budget, *, seed, on_progress=lambda m: None):
        raise NotImplementedError(
            "the causal LM is trained by the train stage (tasks.train with tasks.dpsgd: "
            "checkpoints, resume, canaries); load its model folder with models.base.load")

    def _save(self, directory: Path) -> None:
        # The train stage wrote the weights, codec, tokenizer, replay index and release rules
        # (models.causal_lm.save); family.json, written by Generator.save, is all that is new.
        if not (Path(directory) / tokenizers.META_FILE).is_file():
            raise FileNotFoundError(f"{directory}: no causal-LM weights; the train stage "
                                    "writes them with models.causal_lm.save first")

    def _load(self, directory: Path) -> None:
        directory = Path(directory)
        self.model, self.meta = causal_lm.load(directory)
        self.codec = RecordCodec.from_dict(self.meta["codec"])
        self.tokenizer = tokenizers.for_saved(directory, self.meta)
        self.replay = ReplayIndex.load(directory)
        rules = directory / RELEASE_FILE
        self.release = json.loads(rules.read_text()) if rules.is_file() else None
        if self.spec is None:
            self.spec = spec_of(self.codec, self.release, self.meta)

    @classmethod
    def from_folder(cls, directory: str | Path) -> CausalLM:
        """A model folder written before ``family.json`` existed (weights and privgen.json)."""
        meta = json.loads((Path(directory) / tokenizers.META_FILE).read_text())
        gen = cls(causal_lm.LMConfig.model_validate(meta["model_config"]))
        gen._load(Path(directory))
        return gen

    # -- sampling ----------------------------------------------------------------------------
    def grammar(self, forced: Mapping[str, str] | None = None) -> RecordGrammar | None:
        """The record layout, the released forms and ``forced`` values enforced while
        sampling; byte tokenizers only (a pretrained tokenizer's pieces span fields)."""
        if not self.tokenizer.byte_level:
            return None
        return RecordGrammar(self.codec, self.tokenizer.eos_id, self.tokenizer.vocab_size,
                             prompt_length=1, forced=dict(forced or {}),
                             forms=(self.release or {}).get("forms", {}))

    def _propose(self, n: int, seed: int, conditions: Mapping[str, str] | None) -> Proposal:
        s = {**DEFAULT_SAMPLING, **self.sampling}
        texts = causal_lm.generate(
            self.model, self.tokenizer, n, seed=seed,
            max_new_tokens=self.meta["model_config"]["block_size"] - 1,
            temperature=s["temperature"], top_k=s["top_k"] or None, top_p=s["top_p"],
            batch_size=s["batch_size"], grammar=self.grammar(conditions))
        rows, reasons = [], []
        for text in texts:
            row, reason = self.codec.parse(text)
            if row is not None and conditions and any(
                    str(row.get(k)) != str(v) for k, v in conditions.items()):
                row, reason = None, "condition"  # a non-byte tokenizer cannot force values
            rows.append(row)
            reasons.append(reason)
        return Proposal(rows, reasons, list(texts))

    def copies_training_text(self, row: Mapping) -> bool:
        """Whether a text field of ``row`` repeats a long n-gram of the training text."""
        columns = self.meta.get("replay", {}).get("columns", [])
        return self.replay is not None and any(self.replay.copies(row.get(c)) for c in columns)

    def check(self, row: dict) -> str | None:
        return "replay" if self.copies_training_text(row) else None

    # -- likelihood --------------------------------------------------------------------------
    def token_losses(self, rows: pd.DataFrame,
                     batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """([len(rows)] mean next-token NLL in nats, [len(rows)] tokens scored) of each record
        as the model reads it (the codec's line, the tokenizer's ids, truncated to block)."""
        block = self.meta["model_config"]["block_size"]
        seqs = [self.tokenizer.encode(self.codec.encode(r), block)
                for r in rows.to_dict("records")]
        self.model.eval()
        losses, tokens = [], []
        with torch.no_grad():
            for start in range(0, len(seqs), batch_size):
                part = seqs[start:start + batch_size]
                longest = max(len(s) for s in part)
                ids = torch.full((len(part), longest), self.tokenizer.pad_id, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for i, s in enumerate(part):
                    ids[i, :len(s)], mask[i, :len(s)] = torch.tensor(s), 1
                losses.append(causal_lm.per_sample_loss(self.model, ids, mask).numpy())
                tokens.append(mask[:, 1:].sum(1).clamp(min=1).numpy())
        if not losses:
            return np.zeros(0), np.zeros(0)
        return np.concatenate(losses), np.concatenate(tokens)

    def log_prob(self, rows: pd.DataFrame) -> np.ndarray:
        """[len(rows)] log-likelihood of each record's line (nats; sum over its tokens)."""
        losses, tokens = self.token_losses(rows)
        return -(losses * tokens)

    def perplexity(self, rows: pd.DataFrame) -> float:
        """exp of the mean next-token NLL over every token of ``rows`` (not a mean of
        per-record perplexities)."""
        losses, tokens = self.token_losses(rows)
        return math.exp(float((losses * tokens).sum() / max(tokens.sum(), 1)))


def spec_of(codec: RecordCodec, release: dict | None, meta: dict) -> TableSpec:
    """The table spec of a causal-LM folder: its codec's fields, typed by the released specs
    (text role → text; integer fields → numeric; listed values → categorical; other released
    forms → categorical without a list, checked by their regex)."""
    released = {c["name"]: c for c in (release or {}).get("columns", [])}
    text = set(meta.get("replay", {}).get("columns", []))
    fields = []
    for name in codec.fields:
        c = released.get(name, {})
        nullable = bool(c.get("nullable", False))
        if name in text or c.get("role") == "text":
            fields.append(FieldSpec(name, "text", nullable=nullable))
        elif name in codec.integer_fields:
            fields.append(FieldSpec(name, "numeric", low=c.get("min"), high=c.get("max"),
                                    integer=True, nullable=nullable))
        else:
            allowed = c.get("allowed")
            fields.append(FieldSpec(name, "categorical", values=None if allowed is None
                                    else tuple(allowed), nullable=nullable))
    return TableSpec(tuple(fields))
