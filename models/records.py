"""How a table row becomes one line of text for the language model, and back."""

from __future__ import annotations

import re
import re._constants as sre
import re._parser as sre_parse
from collections.abc import Mapping
from dataclasses import dataclass, fields

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


# Bytes a constrained value may hold: printable ASCII but the separator, and UTF-8 above.
_VALUE_BYTES = frozenset(range(32, 127)) - {_PIPE} | frozenset(range(128, 256))
_CATEGORIES = {sre.CATEGORY_DIGIT: frozenset(b"0123456789"), sre.CATEGORY_SPACE: frozenset(b" "),
               sre.CATEGORY_WORD: frozenset(b"0123456789_abcdefghijklmnopqrstuvwxyz"
                                            b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")}
_NOT = {sre.CATEGORY_NOT_DIGIT: sre.CATEGORY_DIGIT, sre.CATEGORY_NOT_SPACE: sre.CATEGORY_SPACE,
        sre.CATEGORY_NOT_WORD: sre.CATEGORY_WORD}


class _Unsupported(Exception):
    pass


class _NFA:
    """Thompson construction over bytes for the small regex subset contracts use."""

    def __init__(self):
        self.edges: list[list[tuple[frozenset | None, int]]] = []

    def new(self) -> int:
        self.edges.append([])
        return len(self.edges) - 1

    def edge(self, a: int, b: int, on: frozenset | None = None) -> None:
        self.edges[a].append((on, b))

    def chain(self, on: frozenset, at: int) -> int:
        nxt = self.new()
        self.edge(at, nxt, on)
        return nxt

    def build(self, items, at: int) -> int:
        for op, arg in items:
            at = self.item(op, arg, at)
        return at

    def item(self, op, arg, at: int) -> int:
        if op is sre.LITERAL:
            for byte in chr(arg).encode():
                at = self.chain(frozenset({byte}) & _VALUE_BYTES, at)
            return at
        if op in (sre.NOT_LITERAL, sre.ANY, sre.IN):
            return self.chain(_byteset(op, arg), at)
        if op is sre.SUBPATTERN:
            return self.build(arg[-1], at)
        if op is sre.BRANCH:
            end = self.new()
            for alt in arg[1]:
                self.edge(self.build(alt, at), end)
            return end
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            lo, hi, body = arg
            if lo > 64 or (hi is not sre.MAXREPEAT and hi - lo > 64):
                raise _Unsupported
            for _ in range(lo):
                at = self.build(body, at)
            if hi is sre.MAXREPEAT:
                loop = self.new()
                self.edge(at, loop)
                self.edge(self.build(body, loop), loop)
                return loop
            end = self.new()
            for _ in range(hi - lo):
                self.edge(at, end)
                at = self.build(body, at)
            self.edge(at, end)
            return end
        if op is sre.AT:
            return at
        raise _Unsupported


def _byteset(op, arg) -> frozenset:
    if op is sre.ANY:
        return _VALUE_BYTES
    if op is sre.NOT_LITERAL:
        return _VALUE_BYTES - {arg} if arg < 128 else _VALUE_BYTES
    chosen, negate = set(), False
    for kind, value in arg:
        if kind is sre.NEGATE:
            negate = True
        elif kind is sre.LITERAL and value < 128:
            chosen.add(value)
        elif kind is sre.RANGE and value[1] < 128:
            chosen.update(range(value[0], value[1] + 1))
        elif kind is sre.CATEGORY and value in _CATEGORIES:
            chosen |= _CATEGORIES[value]
        elif kind is sre.CATEGORY and value in _NOT:
            chosen |= _VALUE_BYTES - _CATEGORIES[_NOT[value]]
        elif not negate:  # a non-ASCII member: its UTF-8 bytes are no single byte
            raise _Unsupported
    return _VALUE_BYTES - chosen if negate else frozenset(chosen) & _VALUE_BYTES


def compile_form(regex: str, leading_space: bool, max_states: int = 2000):
    """(transitions [S, 256] with -1 for a forbidden byte, accepting [S]) of the bytes
    ``encode`` writes for a value that fully matches ``regex``, its separator spaces included;
    None for a regex outside the subset (then the value is only checked after sampling)."""
    try:
        parsed = sre_parse.parse(regex)
    except re.error:
        return None
    items = list(parsed)
    if not (items and items[0] == (sre.AT, sre.AT_BEGINNING) and items[-1] == (sre.AT, sre.AT_END)):
        return None  # search semantics: a match anywhere in the value, not a form of it
    nfa = _NFA()
    at = start = nfa.new()
    if leading_space:
        at = nfa.chain(frozenset({_SPACE}), at)
    try:
        at = nfa.build(items, at)
    except _Unsupported:
        return None
    final = nfa.chain(frozenset({_SPACE}), at)

    def closure(states) -> frozenset:
        todo, seen = list(states), set(states)
        while todo:
            for on, nxt in nfa.edges[todo.pop()]:
                if on is None and nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return frozenset(seen)

    index, order, table = {}, [closure({start})], []
    index[order[0]] = 0
    while len(table) < len(order):
        state, row = order[len(table)], [-1] * 256
        for byte in range(256):
            target = closure({n for s in state for on, n in nfa.edges[s]
                              if on is not None and byte in on})
            if target:
                if target not in index:
                    if len(order) >= max_states:
                        return None
                    index[target] = len(order)
                    order.append(target)
                row[byte] = index[target]
        table.append(row)
    return torch.tensor(table), torch.tensor([final in state for state in order])


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
        """One automaton over all constrained fields: ``form_next`` [S + 1, 256] (S: dead),
        ``form_mask`` [S + 1, V] additive, and each field's start state or -1."""
        self.form_start = torch.full((len(codec.fields) + 1,), -1)
        tables, accepts, size = [], [], 0
        for i, name in enumerate(codec.fields[:-1]):
            compiled = compile_form(forms[name], leading_space=i > 0) if name in forms else None
            if compiled is not None:
                table, accept = compiled
                tables.append(torch.where(table >= 0, table + size, -1))
                accepts.append(accept)
                self.form_start[i] = size
                size += len(table)
        dead = size
        table = torch.cat([*tables, torch.full((1, 256), -1)]) if tables else torch.full(
            (1, 256), -1)
        self.form_next = torch.where(table >= 0, table, dead)
        self.form_accept = torch.cat([*accepts, torch.zeros(1, dtype=torch.bool)])
        self.form_mask = torch.full((dead + 1, vocab_size), -torch.inf)
        self.form_mask[:, :256][table >= 0] = 0
        self.form_mask[:, _PIPE] = torch.where(self.form_accept, 0.0, -torch.inf)

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
        in_form = torch.where(ended[:, None], self.masks[self._FULL], self.form_mask[form])
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
