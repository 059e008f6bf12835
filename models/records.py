"""How a table row becomes one line of text for the language model, and back."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from transformers import LogitsProcessor

SEP = " | "
_PIPE = ord("|")
_NUMERIC = frozenset(b"0123456789- |")


@dataclass(frozen=True)
class RecordCodec:
    """Serialize the values of ``fields`` in a fixed order, separated by `` | ``.

    Values only, no field names: a small model under DP noise learns a seven-separator layout
    far sooner than seven labels, and shorter lines train faster. The text field goes last so
    its free text may contain anything, including the separator."""

    fields: tuple[str, ...]
    integer_fields: tuple[str, ...] = ()

    def encode(self, row: dict) -> str:
        parts = []
        for name in self.fields:
            value = row.get(name)
            value = "" if value is None or pd.isna(value) else str(value)
            parts.append(" ".join(value.replace("|", "/").split()) if name != self.fields[-1]
                         else " ".join(value.split()))
        return SEP.join(parts)

    def decode(self, text: str) -> dict | None:
        """The row a generated line describes, or None if it does not parse."""
        pieces = text.split(SEP, len(self.fields) - 1)
        if len(pieces) != len(self.fields):
            return None
        row: dict = {}
        for name, value in zip(self.fields, pieces, strict=True):
            if not value.strip():
                return None
            row[name] = value.strip()
        for name in self.integer_fields:
            if not row[name].lstrip("-").isdigit():
                return None
            row[name] = int(row[name])
        return row

    def frame(self, rows: list[dict]) -> pd.DataFrame:
        df = pd.DataFrame(rows, columns=list(self.fields))
        for name in self.fields:
            df[name] = df[name].astype("Int64" if name in self.integer_fields else "string")
        return df

    def to_dict(self) -> dict:
        return {"fields": list(self.fields), "integer_fields": list(self.integer_fields)}

    @classmethod
    def from_dict(cls, d: dict) -> RecordCodec:
        return cls(tuple(d["fields"]), tuple(d.get("integer_fields", ())))


class RecordGrammar(LogitsProcessor):
    """Keeps sampled lines in the codec's layout: no end of record before every field has been
    written, and only digits in integer fields.

    The layout is public schema, not private data, so enforcing it spends no privacy budget;
    it spares a small DP model from learning punctuation it would otherwise get wrong."""

    def __init__(self, codec: RecordCodec, eos_id: int, vocab_size: int, prompt_length: int):
        self.seps = len(codec.fields) - 1
        self.eos_id = eos_id
        self.prompt_length = prompt_length
        self.integer_slots = [i for i, f in enumerate(codec.fields) if f in codec.integer_fields]
        self.non_numeric = torch.tensor([i not in _NUMERIC for i in range(vocab_size)])

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        written = (input_ids[:, self.prompt_length:] == _PIPE).sum(1)       # [B] fields done
        scores = scores.clone()
        scores[written < self.seps, self.eos_id] = -torch.inf
        for slot in self.integer_slots:
            rows = written == slot
            scores[rows.unsqueeze(1) & self.non_numeric[: scores.shape[1]]] = -torch.inf
        return scores
