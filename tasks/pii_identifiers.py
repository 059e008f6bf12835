"""Deny lists linked to the data, as Presidio recognizers: every identifier the dataset holds, and
one record's own identifiers including a name's parts on their own.

Presidio's PatternRecognizer takes a deny list too, but of literal values, one entity per
recognizer: it cannot match a phone number written another way, an alternation of thousands of
dataset-wide values is slow to match, and per record its ``regex`` compile costs about three
times what ``re`` does (240 µs against 86 µs for one name, on a 2-core CPU).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tasks.pii_recognizers import Span, SpanRecognizer, digits

_WORD = re.compile(r"[^\W_]+")
# Loose on purpose: any run of 7+ digits with common separators may be a phone number.
_PHONE_LIKE = re.compile(r"\+?\(?\d[\d\s().-]{6,}\d")


def _words(text: str) -> list[re.Match]:
    return list(_WORD.finditer(text.casefold()))


class IdentifierIndex(SpanRecognizer):
    """Known identifier values (names, emails, phones, ids), found in text in linear time.

    A regex alternation of thousands of values is quadratic in practice, so values are indexed as
    tuples of case-folded words and matched against the word n-grams of the text; phone numbers
    are also matched on their last ten digits so a reformatted number is still caught.
    """

    def __init__(self) -> None:
        self._grams: dict[tuple[str, ...], str] = {}
        self._phones: dict[str, str] = {}
        self._lengths: set[int] = set()
        super().__init__([], name="privgen_known_identifiers")

    def add(self, value: str, entity: str, *, phone: bool = False) -> None:
        words = tuple(m.group() for m in _words(value))
        # One- or two-letter fragments would match ordinary words; they carry no identity alone.
        if not words or sum(map(len, words)) < 4:
            return
        self._grams[words] = entity
        self._lengths.add(len(words))
        if entity not in self.supported_entities:
            self.supported_entities.append(entity)
        number = digits(value)
        if phone and len(number) >= 7:
            self._phones[number[-10:]] = entity

    def __len__(self) -> int:
        return len(self._grams)

    def find(self, text: str) -> list[Span]:
        spans = []
        words = _words(text)
        for n in self._lengths:
            for i in range(len(words) - n + 1):
                key = tuple(m.group() for m in words[i : i + n])
                if key in self._grams:
                    spans.append(Span(words[i].start(), words[i + n - 1].end(), self._grams[key]))
        if self._phones:
            for m in _PHONE_LIKE.finditer(text):
                entity = self._phones.get(digits(m.group())[-10:])
                if entity:
                    spans.append(Span(m.start(), m.end(), entity))
        return spans


class RowPattern(SpanRecognizer):
    """One record's own identifiers as one regex; group ``g<i>`` matched ``entities[i]``."""

    def __init__(self, pattern: re.Pattern, entities: Sequence[str]) -> None:
        self.pattern = pattern
        self.entities = tuple(entities)
        super().__init__(sorted(set(entities)), name="privgen_row_identifiers")

    def find(self, text: str) -> list[Span]:
        return [Span(m.start(), m.end(), self.entities[int(m.lastgroup[1:])])
                for m in self.pattern.finditer(text)]


def row_pattern(values: Sequence[tuple[str, str]]) -> RowPattern | None:
    """A recognizer for one record's own identifiers, including a name's parts on their own.

    ``values`` are (value, entity) pairs. Names are split so "Thanks, Jane" is caught as well as
    "Jane Doe"; case-insensitive because people write their own names in lower case too.
    """
    alternatives: dict[str, str] = {}
    for value, entity in values:
        value = value.strip()
        if not value:
            continue
        alternatives[re.escape(value)] = entity
        if entity == "PERSON":
            for part in _WORD.findall(value):
                if len(part) >= 3:
                    alternatives[re.escape(part)] = entity
        if entity == "PHONE_NUMBER":
            number = digits(value)
            if len(number) >= 7:
                alternatives[r"[\s().-]*".join(number[-10:])] = entity
    if not alternatives:
        return None
    ordered = sorted(alternatives, key=len, reverse=True)
    groups = "|".join(f"(?P<g{i}>{alt})" for i, alt in enumerate(ordered))
    pattern = re.compile(rf"(?<![^\W_])(?:{groups})(?![^\W_])", re.IGNORECASE)
    return RowPattern(pattern, [alternatives[a] for a in ordered])


def row_spans(text: str, row: RowPattern | None) -> list[Span]:
    return row.find(text) if row is not None else []
