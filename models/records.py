"""How a table row becomes one line of text for the language model, and back."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

import pandas as pd
import torch
from transformers import LogitsProcessor

from models.forms import compile_form

SEP = " | "
# Control characters are never valid record content and break CSV readers downstream.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PIPE = ord("|")
_SPACE = ord(" ")
_NUMERIC = frozenset(b"0123456789 |")
# The model folder's release rules (written by training, see tasks.release): per field its
# released spec and the regex form the grammar samples within.
RELEASE_FILE = "release.json"


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

    def field_text(self, name: str, value) -> str:
        """A value as ``encode`` writes it in field ``name``."""
        value = "" if value is None or pd.isna(value) else str(value)
        if name != self.fields[-1]:
            value = value.replace("|", "/")
        return " ".join(value.split())

    def encode(self, row: dict) -> str:
        return SEP.join(self.field_text(name, row.get(name)) for name in self.fields)

    def parse(self, text: str) -> tuple[dict | None, str | None]:
        """(the row a generated line describes, None), or (None, why it does not parse)."""
        pieces = text.split("|", len(self.fields) - 1)  # encode keeps "|" out of all but the last
        if len(pieces) != len(self.fields):
            return None, "parse:fields"
        row: dict = {}
        for name, value in zip(self.fields, pieces, strict=True):
            value = _CONTROL.sub(" ", value).strip()
            if not value:
                return None, f"parse:empty:{name}"
            row[name] = value
        for name in self.integer_fields:
            if not row[name].lstrip("-").isdigit():
                return None, f"parse:integer:{name}"
            row[name] = int(row[name])
        return row, None

    def decode(self, text: str) -> dict | None:
        """The row a generated line describes, or None if it does not parse."""
        return self.parse(text)[0]

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


@dataclass
class GrammarState:
    """Per row: separators written, whether the current field holds a visible character, its
    length in bytes, for integer fields its digits, and for a field with a form its state."""

    written: torch.Tensor
    content: torch.Tensor
    length: torch.Tensor
    digits: torch.Tensor
    form: torch.Tensor  # state in the current field's form automaton, -1 for a free field

    def select(self, rows: torch.Tensor) -> GrammarState:
        return GrammarState(*(getattr(self, f.name)[rows] for f in fields(self)))


class RecordGrammar(LogitsProcessor):
    """Keeps sampled lines in the codec's layout: every field non-empty and at most
    ``max_field_bytes`` long (the free-text field excepted), no end of record before the last
    field, only digits in integer fields; ``forced`` fields hold exactly the given value, and
    fields with a ``forms`` regex (a contract's allowed values, range or format) only values
    that fully match it, where the regex is within the subset ``compile_form`` handles.

    The layout is public schema, not private data, so enforcing it spends no privacy budget;
    it spares a small DP model from learning punctuation it would otherwise get wrong. State is
    updated from each step's last token, so a step costs O(batch), not O(length); the rules
    are precomputed as one additive mask per combination of conditions, so a step applies
    them with one gather.

    A forced field is written byte by byte as ``encode`` writes it, so the fields after it are
    sampled given its value; the fields before it are not (they come first in the line).
    """

    # Conditions a row can be in; each combination indexes one precomputed mask.
    _IN_INT, _INT_STARTED, _FULL, _BLANK_AT_LIMIT, _NO_EOS, _NO_PIPE = (1, 2, 4, 8, 16, 32)

    def __init__(self, codec: RecordCodec, eos_id: int, vocab_size: int, prompt_length: int,
                 max_field_bytes: int = 48, forced: Mapping[str, str] | None = None,
                 forms: Mapping[str, str] | None = None):
        self.seps = len(codec.fields) - 1
        self.max_field_bytes = max_field_bytes
        self.eos_id = eos_id
        self.prompt_length = prompt_length
        widths = dict(zip(codec.integer_fields, codec.integer_widths, strict=False))
        # Per field: whether it holds an integer, and its byte limit (digits for integers,
        # 10 when the contract gives no range); one extra slot for "all fields written".
        slots = [*codec.fields, None]
        self.is_int = torch.tensor([f in codec.integer_fields for f in slots])
        self.limit = torch.tensor([widths.get(f, 10) if f in codec.integer_fields
                                   else max_field_bytes for f in slots])
        self.is_digit = torch.tensor([48 <= i <= 57 for i in range(vocab_size)])
        # A field counts as written once it holds a visible ASCII character: whitespace, control
        # bytes and broken UTF-8 all vanish when the line is decoded and stripped.
        self.visible = torch.tensor([33 <= i <= 126 and i != _PIPE for i in range(vocab_size)])
        self.masks = self._masks(vocab_size)
        self.forced = self._forced(codec, dict(forced or {}))
        self._forms(codec, dict(forms or {}), vocab_size)
        self.state: GrammarState | None = None

    def _masks(self, vocab_size: int) -> torch.Tensor:
        """[64, V]: 0 where a token is allowed under a combination of conditions, else -inf."""
        non_numeric = torch.tensor([i not in _NUMERIC for i in range(vocab_size)])
        masks = torch.zeros(64, vocab_size)
        for combo in range(64):
            banned = torch.zeros(vocab_size, dtype=torch.bool)
            if combo & self._IN_INT:  # one optional leading space, then digits
                banned |= non_numeric
            if combo & self._INT_STARTED:
                banned[_SPACE] = True
            if combo & self._FULL:  # a field at its limit ends
                banned |= torch.arange(vocab_size) != _PIPE
            if combo & self._BLANK_AT_LIMIT:  # a field still blank at its limit gets content
                banned |= ~self.visible
            if combo & self._NO_EOS:
                banned[self.eos_id] = True
            if combo & self._NO_PIPE:
                banned[_PIPE] = True
            masks[combo][banned] = -torch.inf
        return masks

    def _forced(self, codec: RecordCodec, forced: dict[str, str]) -> torch.Tensor | None:
        """[fields + 1, longest]: the byte each forced field must hold at each offset, or -1."""
        if not forced:
            return None
        unknown = sorted(set(forced) - set(codec.fields[:-1]))
        if unknown:
            raise ValueError(f"cannot force {', '.join(unknown)}: forced fields are among "
                             f"{', '.join(codec.fields[:-1])}")
        spelled = {}
        for i, name in enumerate(codec.fields[:-1]):
            if name in forced:
                text = codec.field_text(name, forced[name])
                if not text or text != str(forced[name]):
                    raise ValueError(f"cannot force {name}={forced[name]!r}: a value is non-empty "
                                     "text without '|', line breaks or repeated spaces")
                # "value |" after the start of the line, " value |" after a separator.
                spelled[i] = list(((" " if i else "") + text + " |").encode())
        table = torch.full((len(codec.fields) + 1, max(map(len, spelled.values()))), -1)
        for i, ids in spelled.items():
            table[i, : len(ids)] = torch.tensor(ids)
        return table

    def _forms(self, codec: RecordCodec, forms: dict[str, str], vocab_size: int) -> None:
        """One automaton over all constrained fields, the last one included (it ends the
        record with EOS, the others with the separator): ``form_next`` [S + 1, 256] (S: dead),
        ``form_mask`` [S + 1, V] additive, ``form_end`` [S + 1, V] (only the field's closing
        token), and each field's start state or -1. ``unformed``: the fields whose form is
        outside the automaton's subset, checked only after sampling."""
        self.form_start = torch.full((len(codec.fields) + 1,), -1)
        tables, accepts, closers, size = [], [], [], 0
        self.unformed = []
        last = len(codec.fields) - 1
        for i, name in enumerate(codec.fields):
            compiled = compile_form(forms[name], leading_space=i > 0,
                                    closing_space=i < last) if name in forms else None
            if compiled is None:
                self.unformed += [name] if name in forms else []
                continue
            table, accept = compiled
            tables.append(torch.where(table >= 0, table + size, -1))
            accepts.append(accept)
            closers.append(torch.full((len(table),), self.eos_id if i == last else _PIPE))
            self.form_start[i] = size
            size += len(table)
        dead = size
        table = torch.cat([*tables, torch.full((1, 256), -1)])
        self.form_next = torch.where(table >= 0, table, dead)
        self.form_accept = torch.cat([*accepts, torch.zeros(1, dtype=torch.bool)])
        closer = torch.cat([*closers, torch.tensor([_PIPE])])
        self.form_mask = torch.full((dead + 1, vocab_size), -torch.inf)
        self.form_mask[:, :256][table >= 0] = 0
        rows = torch.arange(dead + 1)
        self.form_mask[rows, closer] = torch.where(self.form_accept, 0.0, -torch.inf)
        self.form_end = torch.full((dead + 1, vocab_size), -torch.inf)
        self.form_end[rows, closer] = 0.0

    def to(self, device: torch.device | str) -> RecordGrammar:
        """Its tables moved to ``device`` (the model's), in place; returns itself."""
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        return self

    def start(self, rows: int) -> GrammarState:
        zeros = torch.zeros(rows, dtype=torch.long, device=self.masks.device)
        return GrammarState(zeros, zeros.bool(), zeros.clone(), zeros.clone(),
                            self.form_start[zeros])

    def advance(self, state: GrammarState, last: torch.Tensor) -> None:
        """Update ``state`` in place with each row's newly sampled token ``last``."""
        is_pipe = (last == _PIPE) & (state.written < self.seps)
        state.written += is_pipe.long()
        moved = self.form_next[state.form.clamp(min=0), last.clamp(max=255)]
        state.form = torch.where(is_pipe, self.form_start[state.written],
                                 torch.where(state.form >= 0, moved, state.form))
        state.content = ~is_pipe & (state.content | self.visible[last])
        state.length = torch.where(is_pipe, 0, state.length + 1)
        state.digits = torch.where(is_pipe, 0, state.digits + self.is_digit[last].long())

    def constrain(self, state: GrammarState, scores: torch.Tensor) -> torch.Tensor:
        """``scores`` [B, V] with every token the layout forbids next set to -inf."""
        in_int = self.is_int[state.written]
        used = torch.where(in_int, state.digits, state.length)
        writing = state.written < self.seps
        over = (used >= self.limit[state.written]) & writing
        combo = (in_int.long() * self._IN_INT
                 + (in_int & (state.length > 0)).long() * self._INT_STARTED
                 + (over & state.content).long() * self._FULL
                 + (over & ~state.content).long() * self._BLANK_AT_LIMIT
                 + (writing | ~state.content).long() * self._NO_EOS
                 + (~state.content & writing).long() * self._NO_PIPE)
        form = state.form.clamp(min=0)
        # A form that repeats without end (a prefix's "*"s) still ends at the byte limit.
        ended = (state.length >= self.max_field_bytes) & self.form_accept[form]
        in_form = torch.where(ended[:, None], self.form_end[form], self.form_mask[form])
        scores = scores + torch.where((state.form >= 0)[:, None], in_form, self.masks[combo])
        if self.forced is not None:
            offset = state.length.clamp(max=self.forced.shape[1] - 1)
            token = self.forced[state.written, offset]
            only = torch.full_like(scores, -torch.inf).scatter_(1, token.clamp(min=0)[:, None], 0)
            scores = torch.where((token >= 0)[:, None], only, scores)
        return scores

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The same rules as a Hugging Face ``LogitsProcessor`` for ``model.generate``."""
        if self.masks.device != scores.device:
            self.to(scores.device)
        if input_ids.shape[1] == self.prompt_length or self.state is None:  # a new batch
            self.state = self.start(input_ids.shape[0])
        else:
            self.advance(self.state, input_ids[:, -1])
        return self.constrain(self.state, scores)
