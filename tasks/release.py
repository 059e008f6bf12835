"""Release rules: what each field of a model's records may hold once released (type, allowed
values, bounds, regex form), from the contract training received and the anonymize settings.

Training writes them into the model folder (``release.json``), so generation, evaluation and the
pyfunc hold samples to the forms the anonymize stage can release, with no look back at the run's
config. A generalized column is released as text in its generalized form: an ``age`` integer
quasi-identifier becomes bands such as ``30-39``, not an integer (issue 12)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING

from models.forms import integer_range_regex, position_classes
from models.records import RELEASE_FILE
from tasks.contract import ColumnSpec, DataContract, DType, Role
from tasks.generalize import MASK, WITHHELD, Hierarchy, Rule, coarser_rules, default_rule
from tasks.storage import write_json

if TYPE_CHECKING:
    from tasks.anonymize import AnonymizeConfig

# Above this many values a form is a pattern, not a list (an automaton of the list grows big).
MAX_LISTED = 1200
_GENERIC = {"year": r"\d{4}", "decade": r"\d{3}0s", "month": r"\d{4}-(?:0[1-9]|1[0-2])",
            "bin": r"-?\d+--?\d+"}
_OWN = {DType.INTEGER: r"-?\d+", DType.FLOAT: r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?",
        DType.DATE: r"\d{4}-\d{2}-\d{2}"}


def _dated(rule: str, spec: ColumnSpec) -> list[str] | None:
    """Every year, decade or month the contract's date bounds allow; None without bounds."""
    bounds = spec.date_bounds()
    if bounds is None:
        return None
    first, last = (max(b, datetime(1000, 1, 1)) for b in bounds)  # 4-digit years only
    if rule == "month":
        months = range(first.year * 12 + first.month - 1, last.year * 12 + last.month)
        return [f"{m // 12:04d}-{m % 12 + 1:02d}" for m in months]
    if rule == "year":
        return [str(y) for y in range(first.year, last.year + 1)]
    return [f"{d}s" for d in range(first.year // 10 * 10, last.year // 10 * 10 + 1, 10)]


def _bands(width: int, spec: ColumnSpec) -> list[str] | None:
    """Every band ``lo-hi`` the contract's numeric bounds allow; None without bounds."""
    if spec.min is None or spec.max is None:
        return None
    start = math.floor(spec.min) // width * width
    return [f"{lo}-{lo + width - 1}" for lo in range(start, math.floor(spec.max) + 1, width)]


def step_form(rule: Rule | None, spec: ColumnSpec) -> tuple[str, list[str] | None]:
    """(regex body, every value when they can be listed) of what ``rule`` releases."""
    if rule is None or rule == MASK:
        return re.escape(WITHHELD), [WITHHELD]
    if isinstance(rule, Hierarchy):
        values = [*rule.hierarchy, WITHHELD]  # unlisted values are withheld
        return "|".join(map(re.escape, values)), values
    name, _, arg = rule.partition(":")
    values = _dated(name, spec) if name in ("year", "decade", "month") else \
        _bands(int(arg), spec) if name == "bin" else None
    if values is not None and len(values) <= MAX_LISTED:
        return "|".join(map(re.escape, values)), values
    if name == "prefix":
        n, classes = int(arg), position_classes(spec.regex) if spec.regex else None
        if classes is not None:  # "^\d{5}$" under prefix:3 releases \d{3}\*\*
            return "".join(classes[:n]) + re.escape(WITHHELD) * max(len(classes) - n, 0), None
        return rf"[^|*]{{1,{n}}}\*?", None
    return _GENERIC[name], None


def own_form(spec: ColumnSpec) -> tuple[str | None, list[str] | None]:
    """(regex body, listed values) of a value released as it is; (None, None) when free."""
    if spec.allowed:
        return "|".join(map(re.escape, spec.allowed)), list(spec.allowed)
    if spec.dtype is DType.INTEGER and spec.min is not None and spec.max is not None:
        return integer_range_regex(math.ceil(spec.min), math.floor(spec.max)), None
    if spec.regex:
        return spec.regex.removeprefix("^").removesuffix("$"), None
    if spec.format is None and spec.dtype in _OWN:
        return _OWN[spec.dtype], None
    return None, None


def _released_as_text(spec: ColumnSpec, steps: list[Rule | None],
                      own: bool) -> ColumnSpec:
    forms = [step_form(r, spec) for r in steps]
    if own:
        forms.insert(0, own_form(spec))
    if any(body is None for body, _ in forms):  # a kept value with no form: not checked
        return ColumnSpec(name=spec.name, role=spec.role, nullable=spec.nullable)
    lists = [values for _, values in forms]
    allowed = None if any(v is None for v in lists) else tuple(dict.fromkeys(
        v for values in lists for v in values))
    return ColumnSpec(name=spec.name, role=spec.role, nullable=spec.nullable, allowed=allowed,
                      regex="^(?:" + "|".join(f"(?:{body})" for body, _ in forms) + ")$")


def released_contract(contract: DataContract, anonymize: AnonymizeConfig) -> DataContract:
    """The contract of the anonymize stage's output: dropped columns gone, every other column
    with the type, values and form it is released in. A kept column keeps its own spec (for
    a released contract, its DP-estimated or declared domain); a generalized one, and a kept
    quasi-identifier, become text in the forms its rule and k-anonymity's coarser steps (or
    withholding) produce; pseudonyms and scrubbed text are free text."""
    # Imported here: the anonymize stage's scrubbing dependencies are heavy, and generation
    # reads a model's release rules without needing them.
    from tasks.anonymize import Operator, operators_for

    ops = operators_for(contract, anonymize)
    specs = []
    for spec in contract.columns:
        op = ops[spec.name]
        if op is Operator.DROP:
            continue
        quasi = spec.role is Role.QUASI_IDENTIFIER
        rule = anonymize.generalize.get(spec.name) or default_rule(spec)
        if op is Operator.KEEP and not quasi:
            specs.append(spec)
        elif op in (Operator.KEEP, Operator.GENERALIZE):
            steps = [rule, *coarser_rules(rule)] if quasi else [rule]
            specs.append(_released_as_text(spec, steps, own=op is Operator.KEEP))
        elif op is Operator.MASK:
            specs.append(ColumnSpec(name=spec.name, role=spec.role, nullable=spec.nullable,
                                    allowed=("<MASKED>",) + ((WITHHELD,) if quasi else ())))
        else:  # pseudonyms, scrubbed text
            specs.append(ColumnSpec(name=spec.name, role=spec.role, nullable=spec.nullable))
    return DataContract(columns=tuple(specs), extra_columns=contract.extra_columns)


_TYPED = {DType.INTEGER: int, DType.FLOAT: float, DType.DATE: date.fromisoformat,
          DType.DATETIME: datetime.fromisoformat}


def _meets(value, spec: ColumnSpec) -> bool:
    text = str(value)
    try:
        if spec.format and spec.dtype in (DType.DATE, DType.DATETIME):
            typed = datetime.strptime(text, spec.format)
        else:
            typed = _TYPED.get(spec.dtype, str)(text)
    except ValueError:
        return False
    if (bounds := spec.date_bounds()) is not None:
        moment = typed if isinstance(typed, datetime) else datetime.combine(typed, time.min)
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        if not bounds[0] <= moment <= bounds[1]:
            return False
    numeric = spec.dtype in (DType.INTEGER, DType.FLOAT)
    if numeric and (not math.isfinite(typed) or (spec.min is not None and typed < spec.min)
                    or (spec.max is not None and typed > spec.max)):
        return False
    if spec.allowed is not None and text not in spec.allowed:
        return False
    return spec.regex is None or re.search(spec.regex, text) is not None


def violation(row: dict, specs: Iterable[ColumnSpec]) -> str | None:
    """``contract:<column>`` for the first field of ``row`` its spec refuses, else None."""
    for spec in specs:
        if spec.name in row and not _meets(row[spec.name], spec):
            return f"contract:{spec.name}"
    return None


def field_forms(specs: Iterable[ColumnSpec]) -> dict[str, str]:
    """The anchored regex each checked field's value must fully match, for the grammar to
    sample within: its allowed values, its integer range (any width), or its format."""
    forms = {}
    for spec in specs:
        body, _ = own_form(spec)
        if body is not None and (spec.allowed or spec.regex or spec.dtype is DType.INTEGER):
            forms[spec.name] = f"^(?:{body})$"
    return forms


def checked(specs: Iterable[ColumnSpec], fields: Iterable[str]) -> list[ColumnSpec]:
    """The specs of ``fields`` that check something beyond a value being non-empty text."""
    fields = set(fields)
    free = ColumnSpec(name="_")
    return [s for s in specs if s.name in fields and s.model_copy(update={
        "name": "_", "role": free.role, "nullable": False, "unique": False}) != free]


def write(contract: DataContract, fields: Iterable[str], directory: Path) -> Path:
    """``release.json`` in a model folder: per generated field its released spec and form."""
    specs = [s for s in contract.columns if s.name in set(fields)]
    return write_json({"columns": [s.model_dump(mode="json") for s in specs],
                       "forms": field_forms(specs)}, Path(directory) / RELEASE_FILE)


def read(meta: dict | None) -> list[ColumnSpec] | None:
    """The released specs a model carries (its loaded ``release.json``), or None."""
    if not meta:
        return None
    return [ColumnSpec.model_validate(s) for s in meta["columns"]]


def from_run_config(config: dict, fields: Iterable[str]) -> list[ColumnSpec]:
    """For models trained before they carried ``release.json``: the released specs re-derived
    from the training run's config.json (its contract and anonymize settings)."""
    from tasks.anonymize import AnonymizeConfig

    contract = DataContract.model_validate(config["contract"])
    anonymize = AnonymizeConfig.model_validate(config["anonymize"])
    return checked(released_contract(contract, anonymize).columns, fields)
