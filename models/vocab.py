"""A word vocabulary built from public sources only, and the token codes of one record: one token
per structured (field, value), then the text fields' words, each text ending in ``<eos>``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from models.base import FieldSpec, TableSpec

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
# What the anonymize stage writes in place of personal data (tasks.pii.PLACEHOLDERS, the
# demo's identifier entities and its ORDER_ID pattern), and what masks a whole value.
PLACEHOLDERS = ("<PERSON>", "<EMAIL>", "<PHONE>", "<CREDIT_CARD>", "<IBAN>", "<IP_ADDRESS>",
                "<SSN>", "<URL>", "<LOCATION>", "<DATE>", "<ADDRESS>", "<POSTCODE>",
                "<DRIVER_LICENSE>", "<TICKET_ID>", "<CUSTOMER_ID>", "<ORDER_ID>", "<MASKED>")
PUNCTUATION = tuple(".,!?;:'\"()-/&$%#@*+=")
DIGITS = tuple("0123456789")
# A placeholder, a word with an optional apostrophe part (wordfreq keeps "don't" whole), one
# digit, or one other visible character.
_TOKEN = re.compile(r"<[A-Z_]+>|[^\W\d_]+(?:'[^\W\d_]+)?|\d|[^\w\s]")
_NO_SPACE_BEFORE = set(".,!?;:)%") | {"'s"}
_NO_SPACE_AFTER = set("($#")
_SENTENCE_END = set(".!?")


def words(text: str) -> list[str]:
    """The tokens of ``text`` in order, case kept."""
    return _TOKEN.findall(text) if isinstance(text, str) else []


def detokenize(tokens: list[str]) -> str:
    """Tokens back to text: no space before closing punctuation or between digits; the first
    word of each sentence and the pronoun "I" capitalized (the vocabulary is lower case)."""
    out, capital = "", True
    for i, tok in enumerate(tokens):
        prev = tokens[i - 1] if i else None
        if tok == "i" or tok.startswith("i'"):
            tok = "I" + tok[1:]
        if capital and tok[:1].isalpha():
            tok, capital = tok[:1].upper() + tok[1:], False
        elif tok in _SENTENCE_END:
            capital = True
        glue = prev is None or tok in _NO_SPACE_BEFORE or prev in _NO_SPACE_AFTER or (
            tok.isdigit() and prev.isdigit())
        out += tok if glue else " " + tok
    return out


class Vocabulary:
    """Tokens → ids. ``public`` builds it from wordfreq's top-``k`` English words, the words of
    the spec's released categorical values (case kept), punctuation, digits and the anonymize
    stage's placeholders: nothing from the private records, so it costs no privacy."""

    def __init__(self, tokens: Iterable[str]):
        self.tokens = list(dict.fromkeys(tokens))
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.pad, self.bos, self.eos, self.unk = (self.index[t] for t in SPECIALS)

    @classmethod
    def public(cls, spec: TableSpec, k: int) -> Vocabulary:
        from wordfreq import top_n_list

        released = [w for f in spec.structured if f.kind == "categorical"
                    for v in f.values or () for w in words(v)]
        common = [w for w in top_n_list("en", k) if _TOKEN.fullmatch(w)]
        return cls([*SPECIALS, *PLACEHOLDERS, *PUNCTUATION, *DIGITS, *released, *common])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """Word ids of ``text``; a word not in the vocabulary as written is looked up in lower
        case, else it is ``<unk>``."""
        return [self.index.get(w, self.index.get(w.lower(), self.unk)) for w in words(text)]

    def decode(self, ids: Iterable[int]) -> str:
        return detokenize([self.tokens[i] for i in ids])


class RecordCodec:
    """Token ids of a record's structured values: after the vocabulary's words, one token per
    categorical value (and one for missing when nullable); numerics binned over the spec's
    [low, high], one token per whole number when an integer field has at most ``bins`` values."""

    def __init__(self, spec: TableSpec, offset: int, bins: int):
        self.spec, self.bins = spec, bins
        self.fields: list[FieldSpec] = spec.structured
        self.choices: list[list] = []  # per field: the value each of its tokens stands for
        for f in self.fields:
            if f.kind == "categorical":
                values: list = list(f.values or ())
            elif f.integer and f.high - f.low + 1 <= bins:
                values = list(range(int(f.low), int(f.high) + 1))
            else:
                values = [("bin", b) for b in range(bins)]
            self.choices.append(values + ([None] if f.nullable else []))
        self.starts = list(np.cumsum([offset] + [len(c) for c in self.choices]))
        self.size = self.starts[-1] - offset

    def token_names(self) -> list[str]:
        return [f"<{f.name}={v}>" for f, c in zip(self.fields, self.choices, strict=True)
                for v in c]

    def allowed(self, i: int) -> range:
        """Ids field ``i`` may take."""
        return range(self.starts[i], self.starts[i + 1])

    def encode(self, i: int, value) -> int:
        """The token of ``value`` in field ``i``; ValueError naming the field if it has none."""
        f, choices = self.fields[i], self.choices[i]
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            if not f.nullable:
                raise ValueError(f"column {f.name!r} is missing a value but is not nullable")
            return self.starts[i] + len(choices) - 1
        if f.kind == "categorical":
            if str(value) not in choices:
                raise ValueError(f"column {f.name!r}: {value!r} is not one of its values")
            return self.starts[i] + choices.index(str(value))
        x = min(max(float(value), f.low), f.high)
        if choices and isinstance(choices[0], int):
            return self.starts[i] + choices.index(round(x))
        width = (f.high - f.low) / self.bins or 1.0
        return self.starts[i] + min(int((x - f.low) / width), self.bins - 1)

    def decode(self, i: int, token: int, rng: np.random.Generator):
        """The value of ``token`` in field ``i``: a bin's value drawn uniformly within it."""
        f, v = self.fields[i], self.choices[i][token - self.starts[i]]
        if isinstance(v, tuple):
            width = (f.high - f.low) / self.bins
            x = f.low + (v[1] + rng.random()) * width
            return float(round(x)) if f.integer else float(x)
        return v if v is None or f.kind == "categorical" else float(v)

    def prefix(self, row: Mapping) -> list[int]:
        return [self.encode(i, row.get(f.name)) for i, f in enumerate(self.fields)]
