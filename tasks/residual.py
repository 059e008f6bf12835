"""The anonymize stage's output gate: which personal data survived in its output, per column
and kind, before anything is written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection

import pandas as pd

from tasks import pii


def residual_kinds(out: pd.DataFrame, index: pii.IdentifierIndex,
                   surrogates: Collection[str] = frozenset(),
                   text_columns: Collection[str] = ()) -> dict[str, Counter]:
    """Per output column, per kind of personal data, how many cells still hold one: a raw
    identifier of the input (kind: its column's entity), or what the patterns find. Scrubbed
    ``text_columns`` are scanned with every pattern kind of ``pii.GATE_ENTITIES``, whatever
    ``text_entities`` the scrubber was given, so the gate is never narrower than the scrubber;
    other columns with the checksum-grade patterns (``pii.pattern_spans``), since a category or
    a generalized code may look like a phone number or a postcode.

    A surrogate this run wrote is skipped, exactly that text and nothing else: it is at a
    reserved domain or number block and was drawn to hold no known identifier (see
    ``Surrogates``), so it is no one's; the index check still runs on every cell, surrogates
    included."""
    found: dict[str, Counter] = {}
    for col in out.columns:
        if not (pd.api.types.is_string_dtype(out[col]) or out[col].dtype == object):
            continue
        scan = pii.gate_spans if col in text_columns else pii.pattern_spans
        kinds: Counter = Counter()
        for v in out[col].dropna().astype(str):
            cell = {s.entity for s in index.find(v)}
            cell |= {s.entity for s in scan(v) if v[s.start : s.end] not in surrogates}
            if cell:
                kinds.update(cell)
                kinds["cells"] += 1
        if kinds:
            found[col] = kinds
    return found


def residual_identifiers(out: pd.DataFrame, index: pii.IdentifierIndex,
                         surrogates: Collection[str] = frozenset(),
                         text_columns: Collection[str] = ()) -> dict[str, int]:
    """Per output column, how many cells still hold personal data (see ``residual_kinds``)."""
    return {col: kinds["cells"] for col, kinds in
            residual_kinds(out, index, surrogates, text_columns).items()}
