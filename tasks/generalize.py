"""Generalization of quasi-identifiers: each rule, its coarser steps, and k-anonymity by local
recoding (Sweeney's Datafly, applied per equivalence class).

A released value never tells more than its rule says: a band, a year, a declared parent group,
a prefix padded to the column's *declared* fixed length (never to the value's own length, which
would leak it), or the withheld mark."""

from __future__ import annotations

import re
import unicodedata

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.contract import ColumnSpec, DType
from tasks.errors import ConfigError

WITHHELD = "*"  # a quasi-identifier generalized all the way: the value is not released
MASK = "mask"  # the rule that withholds every value of a column


class Hierarchy(BaseModel):
    """A declared parent group per category value, e.g. ``{Asia: [China, India]}``; values the
    hierarchy does not list are withheld (``*``): a group of one would release the value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hierarchy: dict[str, tuple[str, ...]] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_parent_each(self) -> Hierarchy:
        seen: dict[str, str] = {}
        for group, members in self.hierarchy.items():
            if not group.strip() or "|" in group or group != " ".join(group.split()) \
                    or group == WITHHELD:
                raise ValueError(f"hierarchy group {group!r}: give non-empty text without '|', "
                                 "line breaks, repeated spaces or the withheld mark '*'")
            for member in members:
                key = _key(member)
                if key in seen and seen[key] != group:
                    # The member is configuration, not data: naming it is safe.
                    raise ValueError(f"hierarchy: {member!r} is under both {seen[key]!r} and "
                                     f"{group!r}; give each value one parent")
                seen[key] = group
        return self

    def parents(self) -> dict[str, str]:
        """Normalized member → its group."""
        return {_key(m): g for g, members in self.hierarchy.items() for m in members}


Rule = str | Hierarchy


def _key(value: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


def fixed_length(spec: ColumnSpec) -> int | None:
    """The length in characters every valid value of ``spec`` has by its regex, else None."""
    if not spec.regex:
        return None
    try:
        lo, hi = re._parser.parse(spec.regex).getwidth()
    except (re.error, OverflowError):
        return None
    return lo if lo == hi and lo > 0 else None


def default_rule(spec: ColumnSpec) -> Rule:
    """Dates to their year, numbers to bands of 10; text to a 3-character prefix only when its
    regex fixes a longer length (a postcode), else withheld: a prefix of free-length text keeps
    little of use and, padded, its length would leak the value (issue 12)."""
    by_type = {DType.DATE: "year", DType.DATETIME: "year", DType.INTEGER: "bin:10",
               DType.FLOAT: "bin:10"}
    if spec.dtype in by_type:
        return by_type[spec.dtype]
    length = fixed_length(spec)
    return "prefix:3" if length is not None and length > 3 else MASK


def check_rule(spec: ColumnSpec, rule: Rule) -> None:
    """Raise ConfigError naming ``anonymize.generalize.<column>`` for a rule that cannot apply."""
    where = f"anonymize.generalize.{spec.name}"
    if isinstance(rule, Hierarchy):
        if spec.dtype is not DType.STRING:
            raise ConfigError(f"{where}: a hierarchy groups text categories; {spec.name} is "
                              f"{spec.dtype}: use year, decade, month or bin:W")
        return
    name, _, arg = rule.partition(":")
    dated = spec.dtype in (DType.DATE, DType.DATETIME)
    numeric = spec.dtype in (DType.INTEGER, DType.FLOAT)
    ok = (rule == MASK or (name in ("year", "decade", "month") and not arg and dated)
          or (name == "prefix" and arg.isdigit() and int(arg) > 0 and spec.dtype is DType.STRING)
          or (name == "bin" and arg.isdigit() and int(arg) > 0 and numeric))
    if not ok:
        fits = ("year, decade or month" if dated else "bin:W (a band W wide)" if numeric
                else "prefix:N, a hierarchy {hierarchy: {group: [values]}}")
        raise ConfigError(f"{where}: rule {rule!r} does not apply to a {spec.dtype} column; "
                          f"use {fits} or mask")


def generalize(values: pd.Series, spec: ColumnSpec, rule: Rule | None) -> pd.Series:
    """The released form of every value (missing stays missing), as strings."""
    rule = rule or default_rule(spec)
    check_rule(spec, rule)
    present = values.notna()
    if isinstance(rule, Hierarchy):
        parents = rule.parents()
        out = values.astype("string").map(lambda v: parents.get(_key(v), WITHHELD)
                                          if isinstance(v, str) else v)
        return out.astype("string")
    if rule == MASK:
        return pd.Series(WITHHELD, index=values.index, dtype="string").where(present, pd.NA)
    name, _, arg = rule.partition(":")
    if name in ("year", "decade", "month"):
        dates = pd.to_datetime(values, errors="coerce")
        if name == "year":
            out = dates.dt.year.astype("Int64").astype("string")
        elif name == "decade":
            out = (dates.dt.year // 10 * 10).astype("Int64").astype("string") + "s"
        else:
            out = dates.dt.strftime("%Y-%m")
        return out.astype("string")
    if name == "prefix":
        n, length = int(arg), fixed_length(spec)
        # Padded to the declared length, which is public; free-length text gets one "*".
        pad = (lambda v: WITHHELD * max(length - n, 0)) if length else (
            lambda v: WITHHELD if len(v) > n else "")
        return values.astype("string").map(
            lambda v: v[:n] + pad(v) if isinstance(v, str) else v).astype("string")
    w = int(arg)
    lo = (pd.to_numeric(values, errors="coerce") // w * w).astype("Int64")
    return (lo.astype("string") + "-" + (lo + w - 1).astype("string")).astype("string")


def coarser_rules(rule: Rule) -> list[Rule | None]:
    """The generalization steps after ``rule``, ending in None (the value withheld)."""
    if isinstance(rule, Hierarchy):
        return [None]
    name, _, arg = rule.partition(":")
    steps: list[Rule | None] = []
    if name in ("month", "year"):
        steps = ["year", "decade"][1 if name == "year" else 0 :]
    elif name == "prefix" and arg.isdigit():
        steps = [f"prefix:{n}" for n in range(int(arg) - 1, 0, -1)]
    elif name == "bin" and arg.isdigit():
        steps = [f"bin:{int(arg) * 2}", f"bin:{int(arg) * 4}"]
    return [*steps, None]


def class_sizes(out: pd.DataFrame, quasi: list[str]) -> pd.Series:
    """Per row, how many rows share its quasi-identifier values (its equivalence class)."""
    ids = out.groupby(quasi, dropna=False, sort=False).ngroup()
    return ids.map(ids.value_counts())


def k_anonymize(out: pd.DataFrame, raw: pd.DataFrame, ladders: dict[str, list[Rule | None]],
                specs: dict[str, ColumnSpec], k: int,
                generalize_first: bool = True) -> tuple[pd.DataFrame, pd.Series, int]:
    """Make every equivalence class over the quasi-identifiers (the keys of ``ladders``) hold
    at least ``k`` rows: coarsen one column one step (from ``raw``) for the rows of small
    classes only; repeat while that helps; mark the rest for suppression.

    ``out``'s quasi-identifier columns must hold strings (coarser steps write bands and ``*``).
    Returns (the frame with coarsened values, a mask of the rows to suppress, how many rows
    were coarsened). Coarsening touches only rows of small classes, so a class that already
    holds k rows never shrinks (local recoding, as in Sweeney's Datafly but per class)."""
    quasi = list(ladders)
    out = out.copy()
    level = pd.DataFrame(0, index=out.index, columns=quasi)
    touched = pd.Series(False, index=out.index)

    def step(col: str, rows: pd.Index) -> pd.Series:
        levels = level.loc[rows, col] + 1
        values = pd.Series(WITHHELD, index=rows, dtype="string")
        for lv, idx in levels.groupby(levels).groups.items():
            rule = ladders[col][lv - 1]
            if rule is not None:
                values[idx] = generalize(raw.loc[idx, col], specs[col], rule)
        return values

    while generalize_first:
        small = class_sizes(out[quasi], quasi) < k
        # Rows of small classes only ever merge with each other: fewer than k of them can
        # never form a class of k, so they are suppressed rather than generalized for nothing.
        if small.sum() < k:
            break
        # Datafly's choice: the column with the most distinct values among those rows is the
        # one that splits them most; coarsening it first keeps the other columns exact. On a
        # tie, the column with more steps left loses less in one step.
        open_cols = {col: out.loc[small & (level[col] < len(ladders[col])), col]
                     for col in quasi}
        open_cols = {col: v for col, v in open_cols.items() if len(v)}
        if not open_cols:
            break
        col = max(open_cols, key=lambda c: (open_cols[c].nunique(dropna=False),
                                            len(ladders[c]) - level.loc[open_cols[c].index,
                                                                        c].max()))
        values = step(col, open_cols[col].index)
        out.loc[values.index, col] = values
        level.loc[values.index, col] += 1
        touched[values.index] = True
    suppress = class_sizes(out[quasi], quasi) < k
    return out, suppress, int((touched & ~suppress).sum())
