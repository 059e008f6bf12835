"""Value forms as byte automata: a released field's regex (allowed values, an integer range, a
generalized form) compiled to a DFA over the bytes ``RecordCodec.encode`` writes, so sampling
can only write values that match it.

The automaton also holds every value to the codec's canonical spelling (no leading, trailing or
repeated spaces, never empty): a form that matched " " or "  3" would let the grammar write a
value that parses as empty or other than sampled (issue 12: ``parse:empty:postcode``)."""

from __future__ import annotations

import re
import re._constants as sre
import re._parser as sre_parse

import torch

_PIPE = ord("|")
_SPACE = ord(" ")
# Bytes a constrained value may hold: printable ASCII but the separator, and UTF-8 above.
VALUE_BYTES = frozenset(range(32, 127)) - {_PIPE} | frozenset(range(128, 256))
_CATEGORIES = {sre.CATEGORY_DIGIT: frozenset(b"0123456789"), sre.CATEGORY_SPACE: frozenset(b" "),
               sre.CATEGORY_WORD: frozenset(b"0123456789_abcdefghijklmnopqrstuvwxyz"
                                            b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")}
_NOT = {sre.CATEGORY_NOT_DIGIT: sre.CATEGORY_DIGIT, sre.CATEGORY_NOT_SPACE: sre.CATEGORY_SPACE,
        sre.CATEGORY_NOT_WORD: sre.CATEGORY_WORD}
_CLASS_TEXT = {sre.CATEGORY_DIGIT: r"\d", sre.CATEGORY_NOT_DIGIT: r"\D",
               sre.CATEGORY_SPACE: r"\s", sre.CATEGORY_NOT_SPACE: r"\S",
               sre.CATEGORY_WORD: r"\w", sre.CATEGORY_NOT_WORD: r"\W"}


class _Unsupported(Exception):
    pass


class _NFA:
    """Thompson construction over bytes for the small regex subset contracts use. Each edge
    says whether it writes value bytes (``True``) or the separator's spaces around them."""

    def __init__(self):
        self.edges: list[list[tuple[frozenset | None, int, bool]]] = []

    def new(self) -> int:
        self.edges.append([])
        return len(self.edges) - 1

    def edge(self, a: int, b: int, on: frozenset | None = None, value: bool = True) -> None:
        self.edges[a].append((on, b, value))

    def chain(self, on: frozenset, at: int, value: bool = True) -> int:
        nxt = self.new()
        self.edge(at, nxt, on, value)
        return nxt

    def build(self, items, at: int) -> int:
        for op, arg in items:
            at = self.item(op, arg, at)
        return at

    def item(self, op, arg, at: int) -> int:
        if op is sre.LITERAL:
            for byte in chr(arg).encode():
                at = self.chain(frozenset({byte}) & VALUE_BYTES, at)
            return at
        if op in (sre.NOT_LITERAL, sre.ANY, sre.IN):
            return self.chain(byteset(op, arg), at)
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


def byteset(op, arg) -> frozenset:
    """The single bytes one regex item (a literal, ``.``, a class) matches."""
    if op is sre.ANY:
        return VALUE_BYTES
    if op is sre.NOT_LITERAL:
        return VALUE_BYTES - {arg} if arg < 128 else VALUE_BYTES
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
            chosen |= VALUE_BYTES - _CATEGORIES[_NOT[value]]
        elif not negate:  # a non-ASCII member: its UTF-8 bytes are no single byte
            raise _Unsupported
    return VALUE_BYTES - chosen if negate else frozenset(chosen) & VALUE_BYTES


def _canonical(c: int, byte: int) -> int:
    """The codec's spelling, as 0 (nothing yet), 1 (after a visible byte), 2 (after one space)
    or -1 (a leading or repeated space). A byte above ASCII changes nothing: alone it may be
    broken UTF-8, which decoding drops, so it never makes a value non-empty by itself."""
    if byte >= 128:
        return c
    if byte != _SPACE:
        return 1
    return 2 if c == 1 else -1


def compile_form(regex: str, leading_space: bool, closing_space: bool = True,
                 max_states: int = 2000):
    """(transitions [S, 256] with -1 for a forbidden byte, accepting [S]) of the bytes
    ``encode`` writes for a value that fully matches ``regex`` in its canonical spelling, with
    the space after a separator (``leading_space``) and the one before the next
    (``closing_space``; the last field has none); None for a regex outside the subset (then
    the value is only checked after sampling)."""
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
        at = nfa.chain(frozenset({_SPACE}), at, value=False)
    try:
        at = nfa.build(items, at)
    except _Unsupported:
        return None
    final = nfa.chain(frozenset({_SPACE}), at, value=False) if closing_space else at

    def closure(pairs) -> frozenset:
        todo, seen = list(pairs), set(pairs)
        while todo:
            s, c = todo.pop()
            for on, nxt, _ in nfa.edges[s]:
                if on is None and (nxt, c) not in seen:
                    seen.add((nxt, c))
                    todo.append((nxt, c))
        return frozenset(seen)

    def move(state, byte: int) -> frozenset:
        out = set()
        for s, c in state:
            for on, nxt, value in nfa.edges[s]:
                if on is None or byte not in on:
                    continue
                if value:
                    if (c2 := _canonical(c, byte)) >= 0:
                        out.add((nxt, c2))
                elif s == at and closing_space:  # the closing space: only after a value
                    if c == 1:
                        out.add((nxt, c))
                else:
                    out.add((nxt, c))
        return closure(out)

    index, order, table = {}, [closure({(start, 0)})], []
    index[order[0]] = 0
    while len(table) < len(order):
        state, row = order[len(table)], [-1] * 256
        for byte in range(256):
            target = move(state, byte)
            if target:
                if target not in index:
                    if len(order) >= max_states:
                        return None
                    index[target] = len(order)
                    order.append(target)
                row[byte] = index[target]
        table.append(row)
    return torch.tensor(table), torch.tensor([(final, 1) in state for state in order])


def integer_range_regex(lo: int, hi: int) -> str:
    """A regex body matching exactly the integers ``lo`` … ``hi`` as ``str(int)`` writes them
    (no leading zeros, no "+", "-0" never), of any width: digit by digit, not a value list."""
    if lo > hi:
        raise ValueError(f"empty integer range {lo}..{hi}")
    parts = []
    if lo < 0:
        parts += ["-" + _group(_natural(max(1, -min(hi, -1)), -lo))]
    if hi >= 0:
        parts += _natural(max(lo, 0), hi)
    return _group(parts)


def _group(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"


def _natural(a: int, b: int) -> list[str]:
    parts = []
    for width in range(len(str(a)), len(str(b)) + 1):
        lo, hi = max(a, 10 ** (width - 1) if width > 1 else 0), min(b, 10**width - 1)
        if lo <= hi:
            parts += _same_width(str(lo), str(hi))
    return parts


def _same_width(lo: str, hi: str) -> list[str]:
    if lo == hi:
        return [lo]
    if len(lo) == 1:
        return [f"[{lo}-{hi}]"]
    if lo[0] == hi[0]:
        return [lo[0] + _group(_same_width(lo[1:], hi[1:]))]
    n, parts = len(lo) - 1, []
    first, last = int(lo[0]), int(hi[0])
    if lo[1:] != "0" * n:
        parts.append(lo[0] + _group(_same_width(lo[1:], "9" * n)))
        first += 1
    tail = [] if hi[1:] == "9" * n else [hi[0] + _group(_same_width("0" * n, hi[1:]))]
    if tail:
        last -= 1
    if first <= last:
        parts.append((str(first) if first == last else f"[{first}-{last}]") + rf"\d{{{n}}}")
    return parts + tail


def position_classes(regex: str) -> list[str] | None:
    """One regex class per character of a fixed-length, position-by-position regex
    (``^\\d{5}$`` → five ``\\d``), else None: what a prefix of such a value may hold."""
    try:
        items = list(sre_parse.parse(regex))
    except re.error:
        return None
    if not (items and items[0] == (sre.AT, sre.AT_BEGINNING) and items[-1] == (sre.AT, sre.AT_END)):
        return None
    return _positions(items[1:-1])


def _positions(items) -> list[str] | None:
    out: list[str] = []
    for op, arg in items:
        if op is sre.LITERAL:
            out.append(re.escape(chr(arg)))
        elif op is sre.ANY:
            out.append("[^|]")
        elif op is sre.NOT_LITERAL:
            out.append(f"[^|{re.escape(chr(arg))}]")
        elif op is sre.IN:
            out.append(_class_text(arg))
        elif op is sre.SUBPATTERN:
            inner = _positions(arg[-1])
            if inner is None:
                return None
            out += inner
        elif op is sre.MAX_REPEAT and arg[0] == arg[1]:
            inner = _positions(arg[2])
            if inner is None or arg[0] > 256:
                return None
            out += inner * arg[0]
        else:
            return None
    return out


def _class_text(arg) -> str:
    parts = []
    for kind, value in arg:
        if kind is sre.NEGATE:
            parts.insert(0, "^")
        elif kind is sre.LITERAL:
            parts.append(re.escape(chr(value)))
        elif kind is sre.RANGE:
            parts.append(f"{re.escape(chr(value[0]))}-{re.escape(chr(value[1]))}")
        elif kind is sre.CATEGORY:
            parts.append(_CLASS_TEXT.get(value, ""))
    return "[" + "".join(parts) + "]"
