"""The table spec a generator family learns and emits, from the released contract (after the
domain stage and the anonymize stage's release forms), and the choice of family for ``auto``.

Nothing here is read from the private data: every category list and bound comes from the
contract, where it was declared public or estimated under DP (tasks/domain.py)."""

from __future__ import annotations

import importlib.util
import math
import re
import string
from collections.abc import Iterable

from models import base
from models.base import FieldSpec, TableSpec
from models.forms import position_classes
from tasks.contract import ColumnSpec, DataContract, DType, Role
from tasks.errors import ConfigError

# A regex form is listed value by value up to this many values (release.MAX_LISTED's size).
MAX_ENUMERATED = 1200
# The characters a released form's position may hold, when it is enumerated.
_PRINTABLE = string.printable.strip() + " "
_EXCLUDED = (Role.ID, Role.DIRECT_IDENTIFIER)


def table_spec(released: DataContract, columns: Iterable[str]) -> TableSpec:
    """The spec of ``columns`` (those of the training frame) as ``released`` releases them:
    categorical ← ``allowed`` or a small finite regex form (e.g. a postcode released as
    ``\\d{3}\\*\\*``); integer/float ← min/max; text ← role text; ids and direct identifiers
    never; structured columns first, free text last. ConfigError naming the column and what
    to declare when a structured column has no finite released domain."""
    columns = set(columns)
    fields, missing = [], []
    for spec in released.columns:
        if spec.name not in columns or spec.role in _EXCLUDED:
            continue
        field = field_spec(spec)
        if field is None:
            missing.append(spec)
        else:
            fields.append(field)
    if missing:
        raise ConfigError(no_domain_message(missing))
    return TableSpec(tuple(sorted(fields, key=lambda f: f.kind == "text")))


def field_spec(spec: ColumnSpec) -> FieldSpec | None:
    """One column's field, or None when it is structured with no finite released domain."""
    if spec.role is Role.TEXT:
        return FieldSpec(spec.name, "text", nullable=spec.nullable)
    if spec.allowed is not None:
        return FieldSpec(spec.name, "categorical", values=tuple(spec.allowed),
                         nullable=spec.nullable)
    if spec.dtype in (DType.INTEGER, DType.FLOAT) and spec.min is not None \
            and spec.max is not None:
        integer = spec.dtype is DType.INTEGER
        return FieldSpec(spec.name, "numeric", low=math.ceil(spec.min) if integer else spec.min,
                         high=math.floor(spec.max) if integer else spec.max, integer=integer,
                         nullable=spec.nullable)
    values = enumerate_form(spec.regex) if spec.regex else None
    if values is not None:
        return FieldSpec(spec.name, "categorical", values=tuple(values), nullable=spec.nullable)
    return None


def no_domain_message(specs: list[ColumnSpec]) -> str:
    names = ", ".join(s.name for s in specs)
    return (f"contract column(s) {names}: no finite released domain for a table model; declare "
            "allowed values (categories), min and max (numbers) or earliest/latest with a "
            "generalize rule such as month (dates), or set domain: observed to have them "
            "estimated under DP; or choose train.family=causal_lm, which writes any form")


def enumerate_form(regex: str, limit: int = MAX_ENUMERATED) -> list[str] | None:
    """Every value an anchored regex of fixed-length alternatives matches (``^\\d{2}$``: 100
    values; a released union such as ``^(?:(?:\\d{3}\\*\\*)|(?:\\*{5}))$``: 1001), in order;
    None when a form is not position by position or there are more than ``limit``."""
    values: list[str] = []
    for alternative in _alternatives(regex):
        classes = position_classes(f"^{alternative}$")
        if classes is None:
            return None
        chars = [[c for c in _PRINTABLE if re.fullmatch(cls, c)] for cls in classes]
        if math.prod(len(c) for c in chars) + len(values) > limit:
            return None
        values += _product(chars)
    return list(dict.fromkeys(values)) or None


def _product(chars: list[list[str]]) -> list[str]:
    out = [""]
    for options in chars:
        out = [prefix + c for prefix in out for c in options]
    return out


def _alternatives(regex: str) -> list[str]:
    """The top-level alternatives of ``^(?:a|b)$`` (or of ``^a$``), each unwrapped."""
    body = regex.removeprefix("^").removesuffix("$")
    body = _unwrap(body)
    parts, depth, start, i = [], 0, 0, 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":  # a class may hold ( ) | unescaped
            i = body.index("]", i + 2 if body[i + 1:i + 2] in ("]", "^") else i + 1) + 1
            continue
        depth += ch == "("
        depth -= ch == ")"
        if ch == "|" and depth == 0:
            parts.append(body[start:i])
            start = i + 1
        i += 1
    parts.append(body[start:])
    return [_unwrap(p) for p in parts]


def _unwrap(body: str) -> str:
    """``(?:x)`` → ``x`` when the group spans the whole of ``body``."""
    while body.startswith("(?:") and body.endswith(")"):
        depth = 0
        for i, ch in enumerate(body):
            depth += ch == "(" and body[i - 1:i] != "\\"
            depth -= ch == ")" and body[i - 1:i] != "\\"
            if depth == 0 and i < len(body) - 1:
                return body
        body = body[3:-1]
    return body


def available(name: str) -> bool:
    """Whether family ``name``'s module is installed (importable) in this privgen."""
    module = base.FAMILIES[name].partition(":")[0]
    return importlib.util.find_spec(module) is not None


def choose_family(released: DataContract, columns: Iterable[str]) -> tuple[str, str]:
    """(family, reason) for ``auto``: no text column → aim; text only → causal_lm; text and
    structured → hybrid. A structured column with no finite released domain, or a family not
    installed, sends the record to the causal LM, which writes any released form as text."""
    columns = set(columns)
    kept = [c for c in released.columns if c.name in columns and c.role not in _EXCLUDED]
    text = [c.name for c in kept if c.role is Role.TEXT]
    structured = [c for c in kept if c.role is not Role.TEXT]
    if not structured:
        return "causal_lm", f"text only ({', '.join(text)})"
    open_ = [c.name for c in structured if field_spec(c) is None]
    if open_:
        return "causal_lm", (f"{', '.join(open_)} ha{'s' if len(open_) == 1 else 've'} no "
                             "finite released domain for a table model; the causal LM writes "
                             "its released form as text")
    family = "hybrid" if text else "aim"
    why = (f"{len(structured)} structured and {len(text)} text column(s)" if text
           else f"{len(structured)} structured columns, no text")
    if not available(family):
        fallback = "causal_lm" if text else None
        if fallback is None:
            raise ConfigError(f"train.family=auto chose {family} ({why}), but models/"
                              f"{base.FAMILIES[family].partition(':')[0].split('.')[-1]}.py "
                              "is not installed; set train.family to an installed family")
        return fallback, f"{why}; the {family} family is not installed"
    return family, why
