"""How a table row becomes one line of text for the language model, and back."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd
import torch
from transformers import LogitsProcessor

SEP = " | "
# Control characters are never valid record content and break CSV readers downstream.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PIPE = ord("|")
_SPACE = ord(" ")
_NUMERIC = frozenset(b"0123456789 |")


@dataclass(frozen=True)
class RecordCodec:
    """Serialize the values of ``fields`` in a fixed order, separated by `` | ``.

    Values only, no field names: a small model under DP noise learns a seven-separator layout
    far sooner than seven labels, and shorter lines train faster. The text field goes last so
    its free text may contain anything, including the separator."""

    fields: tuple[str, ...]
    integer_fields: tuple[str, ...] = ()
    # Longest value of each integer field, in characters, from the contract's range.
    integer_widths: tuple[int, ...] = ()

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
        pieces = text.split("|", len(self.fields) - 1)  # encode keeps "|" out of all but the last
        if len(pieces) != len(self.fields):
            return None
        row: dict = {}
        for name, value in zip(self.fields, pieces, strict=True):
            value = _CONTROL.sub(" ", value)
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
        return {"fields": list(self.fields), "integer_fields": list(self.integer_fields),
                "integer_widths": list(self.integer_widths)}

    @classmethod
    def from_dict(cls, d: dict) -> RecordCodec:
        return cls(tuple(d["fields"]), tuple(d.get("integer_fields", ())),
                   tuple(d.get("integer_widths", ())))


class RecordGrammar(LogitsProcessor):
    """Keeps sampled lines in the codec's layout: every field non-empty and at most
    ``max_field_bytes`` long (the free-text field excepted), no end of record before the last
    field, only digits in integer fields.

    The layout is public schema, not private data, so enforcing it spends no privacy budget;
    it spares a small DP model from learning punctuation it would otherwise get wrong. State is
    updated from each step's last token, so a step costs O(batch), not O(length).
    """

    def __init__(self, codec: RecordCodec, eos_id: int, vocab_size: int, prompt_length: int,
                 max_field_bytes: int = 48):
        self.seps = len(codec.fields) - 1
        self.max_field_bytes = max_field_bytes
        self.eos_id = eos_id
        self.prompt_length = prompt_length
        self.integer_slots = [i for i, f in enumerate(codec.fields) if f in codec.integer_fields]
        widths = dict(zip(codec.integer_fields, codec.integer_widths, strict=False))
        # Digits per integer field; 10 when the contract gives no range.
        self.widths = [widths.get(codec.fields[i], 10) for i in self.integer_slots]
        self.non_numeric = torch.tensor([i not in _NUMERIC for i in range(vocab_size)])
        # A field counts as written once it holds a visible ASCII character: whitespace, control
        # bytes and broken UTF-8 all vanish when the line is decoded and stripped.
        self.visible = torch.tensor([33 <= i <= 126 and i != _PIPE for i in range(vocab_size)])
        self.written = self.content = self.length = self.digits = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] == self.prompt_length:  # a new batch starts
            self.written = torch.zeros(input_ids.shape[0], dtype=torch.long)
            self.content = torch.zeros(input_ids.shape[0], dtype=torch.bool)
            self.length = torch.zeros(input_ids.shape[0], dtype=torch.long)
            self.digits = torch.zeros(input_ids.shape[0], dtype=torch.long)
        else:
            last = input_ids[:, -1]
            is_pipe = (last == _PIPE) & (self.written < self.seps)
            self.written += is_pipe.long()
            self.content = ~is_pipe & (self.content | self.visible[last])
            self.length = torch.where(is_pipe, 0, self.length + 1)
            is_digit = (last >= ord("0")) & (last <= ord("9"))
            self.digits = torch.where(is_pipe, 0, self.digits + is_digit.long())
        scores = scores.clone()
        in_int = torch.zeros_like(self.content)
        used, limit = self.length.clone(), torch.full_like(self.length, self.max_field_bytes)
        for slot, width in zip(self.integer_slots, self.widths, strict=True):
            in_int |= self.written == slot
            limit[self.written == slot] = width
            used[self.written == slot] = self.digits[self.written == slot]
        # Integer fields: one optional leading space, then at most `width` digits.
        scores[in_int.unsqueeze(1) & self.non_numeric[: scores.shape[1]]] = -torch.inf
        scores[in_int & (self.length > 0), _SPACE] = -torch.inf
        over = (used >= limit) & (self.written < self.seps)
        full = over & self.content
        pipe_scores = scores[full, _PIPE].clone()
        scores[full] = -torch.inf
        scores[full, _PIPE] = pipe_scores
        # A field still blank at its limit must get a visible character next.
        scores[(over & ~self.content).unsqueeze(1) & ~self.visible[: scores.shape[1]]] = -torch.inf
        scores[(self.written < self.seps) | ~self.content, self.eos_id] = -torch.inf
        scores[~self.content & (self.written < self.seps), _PIPE] = -torch.inf
        return scores
