"""Contract inference: read a file once and propose a data contract as commented YAML.

Types come from what every value converts to under validate's own casts, so the proposal
validates the file it came from; roles are guessed from column names and content and are
meant to be reviewed, since they decide what anonymize drops, pseudonymizes or keeps.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tasks.contract import ColumnSpec, DataContract, Domain, DType, Role
from tasks.ingest import INGEST_ERROR, IngestConfig, records
from tasks.validate import cast

# Spellings of "no value" seen in public datasets (UCI's "?", spreadsheet "#N/A", ...).
MARKERS = ("?", "-", "--", ".", "n/a", "na", "NaN", "NAN", "none", "#N/A", "(null)", "missing")
MAX_DISTINCT = 50  # beyond this a string column is not a category
MAX_ALLOWED = 20  # a category lists its allowed values only when there are this few
_EMAIL = r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$"
_PHONE = r"^\+?[\d\s().-]{7,}$"
_INT = r"^[+-]?(0|[1-9]\d{0,17})$"  # leading zeros make a code ("02127"), not a number
_FLOAT = r"^[+-]?((0|[1-9]\d*)(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"
_DATEISH = r"^\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}$"
_DATETIME = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$"
DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d", "%d-%m-%Y")

# Column-name words, matched against the name split on "_", "-", spaces and camelCase.
_NAME_ROLES = [
    (Role.SENSITIVE, {"diagnosis", "disease", "condition", "health", "medical", "medication",
                      "religion", "ethnicity", "race", "salary", "income", "sexuality",
                      "orientation", "disability", "political", "criminal", "hiv"}),
    (Role.DIRECT_IDENTIFIER, {"email", "mail", "phone", "mobile", "tel", "telephone", "fax",
                              "surname", "firstname", "lastname", "fullname", "username",
                              "ssn", "passport", "iban", "address", "street", "ip", "login"}),
    (Role.QUASI_IDENTIFIER, {"birth", "birthdate", "birthday", "dob", "zip", "zipcode",
                             "postcode", "postal", "gender", "sex", "age", "nationality"}),
    (Role.ID, {"id", "uuid", "guid", "key"}),
]
_PERSON = {"full", "first", "last", "given", "family", "middle", "maiden", "user", "customer",
           "patient", "person", "contact", "client", "employee"}


def _words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def role_from_name(name: str) -> Role | None:
    words = _words(name)
    if "name" in words and (len(words) == 1 or _PERSON & set(words)):
        return Role.DIRECT_IDENTIFIER
    for role, vocab in _NAME_ROLES:
        hits = vocab & set(words)
        # "id" names an id only as the last word: "id_card_type" is not one.
        if hits and (role is not Role.ID or words[-1] in vocab):
            return role
    return None


def _counts(values: pa.Array) -> dict[str, int]:
    counted = pc.value_counts(values)
    return dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(),
                    strict=True))


def _hits(values: pa.Array, pattern: str) -> int:
    return pc.sum(pc.match_substring_regex(values, pattern)).as_py() or 0


@dataclass
class _Column:
    """What one pass over a column has seen."""

    name: str
    values: int = 0
    nulls: int = 0
    markers: Counter = field(default_factory=Counter)
    counts: Counter | None = field(default_factory=Counter)
    keys: np.ndarray | None = field(default_factory=lambda: np.empty(0, np.uint64))
    dtypes: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(
        ["integer", "float", *DATE_FORMATS, "datetime"], True))
    max_len: int = 0
    total_len: int = 0
    spaced: int = 0
    emails: int = 0
    phones: int = 0
    shapes: set[str] | None = field(default_factory=set)
    low: float | None = None
    high: float | None = None

    def see(self, raw: pa.Array, markers: pa.Array) -> None:
        """Take in one chunk of the column (Arrow kernels: RE2 regexes, no per-value Python)."""
        self.nulls += raw.null_count
        present = raw.drop_null()
        is_marker = pc.is_in(present, value_set=markers)
        self.markers.update(_counts(present.filter(is_marker)))
        v = present.filter(pc.invert(is_marker))
        if not len(v):
            return
        self.values += len(v)
        if self.counts is not None:
            self.counts.update(_counts(v))
            if len(self.counts) > MAX_DISTINCT:
                self.counts = None
        if self.keys is not None:
            keys = pd.util.hash_array(v.to_numpy(zero_copy_only=False))
            if len(np.unique(keys)) < len(keys) or np.isin(keys, self.keys).any():
                self.keys = None
            else:
                self.keys = np.union1d(self.keys, keys)
        lengths = pc.utf8_length(v)
        self.max_len = max(self.max_len, pc.max(lengths).as_py())
        self.total_len += pc.sum(lengths).as_py()
        self.spaced += _hits(v, r"\s")
        self.emails += _hits(v, _EMAIL)
        phone = pc.and_(pc.match_substring_regex(v, _PHONE),
                        pc.greater_equal(pc.count_substring_regex(v, r"\d"), 7))
        self.phones += pc.sum(phone).as_py() or 0
        if self.shapes is not None and self.max_len <= 40:
            shape = v
            for pattern, letter in (("[0-9]", "9"), ("[A-Z]", "A"), ("[a-z]", "a")):
                shape = pc.replace_substring_regex(shape, pattern, letter)
            self.shapes |= set(pc.unique(shape).to_pylist())
            if len(self.shapes) > 1:
                self.shapes = None
        self._types(v)

    def _types(self, v: pa.Array) -> None:
        ok = self.dtypes
        if ok["integer"]:
            ok["integer"] = _hits(v, _INT) == len(v)
        if ok["float"]:
            ok["float"] = _hits(v, _FLOAT) == len(v)
        if ok["integer"] or ok["float"]:
            numbers = pd.to_numeric(v.to_pandas(), errors="coerce")
            self.low = min(x for x in (self.low, numbers.min()) if x is not None)
            self.high = max(x for x in (self.high, numbers.max()) if x is not None)
        # The regexes only shortlist; validate's own cast must then accept every value.
        text = v.to_pandas() if any(ok[f] for f in (*DATE_FORMATS, "datetime")) else None
        dateish = text is not None and _hits(v, _DATEISH) == len(v)
        for fmt in DATE_FORMATS:
            if ok[fmt]:
                spec = ColumnSpec(name=self.name, dtype=DType.DATE, format=fmt)
                ok[fmt] = dateish and bool(cast(text, spec).notna().all())
        if ok["datetime"]:
            ok["datetime"] = _hits(v, _DATETIME) == len(v) and bool(
                cast(text, ColumnSpec(name=self.name, dtype=DType.DATETIME)).notna().all())

    def dtype(self) -> tuple[DType, str | None]:
        if not self.values:
            return DType.STRING, None
        if self.dtypes["integer"]:
            return DType.INTEGER, None
        if self.dtypes["float"]:
            return DType.FLOAT, None
        for fmt in DATE_FORMATS:
            if self.dtypes[fmt]:
                return DType.DATE, None if fmt == "%Y-%m-%d" else fmt
        if self.dtypes["datetime"]:
            return DType.DATETIME, None
        return DType.STRING, None

    def absorb(self, value: str, count: int) -> None:
        """A marker that stays a value after all (free text "-", say): count it back in."""
        self.values += count
        if self.counts is not None:
            self.counts[value] += count
            if len(self.counts) > MAX_DISTINCT:
                self.counts = None
        if count > 1:
            self.keys = None
        self.max_len = max(self.max_len, len(value))
        self.total_len += len(value) * count
        self.shapes = None


def _shape_regex(shape: str) -> str:
    """``A-999999`` (every value's letters as A/a, digits as 9) as ``^[A-Z]-\\d{6}$``."""
    parts = []
    for run in re.finditer(r"9+|A+|a+|[^9Aa]", shape):
        text = run.group(0)
        cls = {"9": r"\d", "A": "[A-Z]", "a": "[a-z]"}.get(text[0])
        literal = text if text in "-_ :/@#,;'" else re.escape(text)
        parts.append(f"{cls}{{{len(text)}}}" if cls and len(text) > 1 else cls or literal)
    return "^" + "".join(parts) + "$"


@dataclass
class Inference:
    """A proposed contract with the evidence behind each column and the ingest settings that
    read the file (detected delimiter and encoding, adopted missing-value markers)."""

    contract: DataContract
    notes: dict[str, str]
    ingest: dict[str, Any]
    rows: int
    source: str

    def to_yaml(self) -> str:
        return contract_to_yaml(self.contract, self.notes, self.ingest,
                                f"from {self.source} ({self.rows} rows)") + stage_sections(
            self.contract)


# Column names that say "the outcome": what the train-on-synthetic test should predict.
_LABEL_WORDS = {"y", "label", "target", "class", "outcome", "income", "churn", "default",
                "result", "status", "diagnosis", "response"}


def utility_label(contract: DataContract) -> str | None:
    """A guess at the column a train-on-synthetic model should predict: a kept category with
    a short value list, named like an outcome, else the last (datasets put the label last)."""
    kept = (Role.CATEGORY, Role.SENSITIVE)
    labels = [c.name for c in contract.columns if c.role in kept and c.allowed
              and 2 <= len(c.allowed) <= MAX_ALLOWED]
    named = [n for n in labels if _LABEL_WORDS & set(_words(n))]
    return (named or labels or [None])[-1]


def stage_sections(contract: DataContract) -> str:
    """The anonymize and evaluate settings the proposed contract needs, as YAML with comments:
    a file with a ``contract:`` starts from the stages' generic defaults, not the demo's."""
    dated, numeric = (DType.DATE, DType.DATETIME), (DType.INTEGER, DType.FLOAT)
    rules = {c.name: "year" if c.dtype in dated else "bin:10" for c in contract.columns
             if c.role is Role.QUASI_IDENTIFIER and (c.dtype in dated or c.dtype in numeric)}
    lines = ["anonymize:",
             "  # Quasi-identifiers: dates to their year, numbers to bands of 10; text ones get",
             "  # anonymize's default (see anonymize.generalize). Coarser steps follow for k."]
    lines += ["  generalize:"] + [f"    {_scalar(k)}: {_scalar(v)}" for k, v in rules.items()] \
        if rules else ["  generalize: {}"]
    label = utility_label(contract)
    lines += ["evaluate:", "  # The column the train-on-synthetic test predicts; null: the first "
              "category column."]
    lines.append(f"  utility_label: {_scalar(label)}")
    return "\n".join(lines) + "\n"


def _propose(col: _Column, rows: int) -> tuple[ColumnSpec, str]:
    dtype, fmt = col.dtype()
    nullable = col.nulls > 0
    unique = col.keys is not None and not nullable and col.values > 1
    distinct = len(col.counts) if col.counts is not None else None
    mean_len = col.total_len / max(col.values, 1)
    named = role_from_name(col.name)
    notes = [f"{col.nulls} of {rows} empty" if nullable else f"no empty value in {rows} rows"]
    if distinct is not None:
        notes.append(f"{distinct} distinct values")
    spec: dict[str, Any] = {"name": col.name, "dtype": dtype, "nullable": nullable,
                            "format": fmt}
    if named is not None:
        role = named
        notes.append(f"role from the name {col.name!r}")
    elif col.values and col.emails / col.values >= 0.95:
        role = Role.DIRECT_IDENTIFIER
        notes.append("values look like e-mail addresses")
    elif dtype is DType.STRING and col.values and col.phones / col.values >= 0.95:
        role = Role.DIRECT_IDENTIFIER
        notes.append("values look like phone numbers")
    elif dtype in (DType.DATE, DType.DATETIME):
        role = Role.DATETIME
    elif dtype in (DType.INTEGER, DType.FLOAT):
        role = Role.NUMERIC
    elif unique and col.spaced == 0 and col.max_len <= 64 and rows >= 20:
        role = Role.ID
        notes.append("unique, short and without spaces: looks like an id")
    elif mean_len > 40 or (col.spaced > col.values / 2 and distinct is None):
        role = Role.TEXT
        notes.append(f"free text, {mean_len:.0f} characters on average")
    elif distinct is not None and distinct <= max(2, col.values // 2):
        role = Role.CATEGORY
    else:
        role = Role.QUASI_IDENTIFIER
        notes.append("many distinct short values with no clear meaning: review this role")
    spec["role"] = role
    if role is Role.ID:
        spec["unique"] = unique
        if not unique:
            notes.append("named like an id but repeats or has gaps, so not declared unique")
    if dtype is DType.STRING and col.shapes and role in (Role.ID, Role.QUASI_IDENTIFIER):
        spec["regex"] = _shape_regex(next(iter(col.shapes)))
    elif role is Role.DIRECT_IDENTIFIER and col.values and col.emails == col.values:
        spec["regex"] = _EMAIL
    # Every value seen, and the extremes, come from the private data: marked observed, so a
    # training run estimates them under DP (or refuses) instead of releasing them (issue 12).
    if role in (Role.CATEGORY, Role.SENSITIVE) and dtype is DType.STRING and distinct \
            and distinct <= MAX_ALLOWED:
        spec["allowed"] = tuple(sorted(col.counts))
        spec["domain"] = Domain.OBSERVED
    if col.low is not None and dtype is DType.INTEGER and role not in (Role.ID,
                                                                       Role.DIRECT_IDENTIFIER):
        spec["min"], spec["max"] = int(col.low), int(col.high)
        spec["domain"] = Domain.OBSERVED
    elif col.low is not None and dtype is DType.FLOAT:
        notes.append(f"observed range {col.low:g} to {col.high:g}")
    return ColumnSpec(**spec), "; ".join(notes)


def _header_is_data(cols: dict[str, _Column]) -> bool:
    """Whether the first line reads as a record: in more columns than not, its cell (the
    column's name) is a value like the column's own (a ``0`` heading a 0/1 label column, a
    category that occurs below it, a sentence heading free text), as csv.Sniffer.has_header
    votes."""
    votes = 0
    for name, col in cols.items():
        dtype = col.dtype()[0]
        if col.counts is not None and name in col.counts:
            votes += 1  # "spam" heading a column of "ham" and "spam"
        elif dtype is DType.STRING and col.total_len / max(col.values, 1) > 40:
            votes += 1 if len(name) > 40 or name.count(" ") >= 4 else 0
        elif dtype in (DType.INTEGER, DType.FLOAT):
            votes += 1 if re.match(_FLOAT, name.strip()) else -1
        elif dtype in (DType.DATE, DType.DATETIME):
            votes += 1 if re.match(_DATEISH, name.strip()) or re.match(
                _DATETIME, name.strip()) else -1
    return votes > 0


def infer(path: Path, cfg: IngestConfig) -> Inference:
    """Read ``path`` once (in chunks) and propose a contract that validates it."""
    cfg = cfg.model_copy(update={"path": Path(path)})
    candidates = [m for m in MARKERS if m not in cfg.missing_values]
    names, chunks, detected = records(cfg)
    cols = {n: _Column(n) for n in names}
    rows = total = 0
    markers = pa.array(candidates, pa.string())
    swallowed = 0
    for table in chunks:
        readable = table.filter(pc.is_null(table[INGEST_ERROR]))
        rows += readable.num_rows
        total += table.num_rows
        swallowed += pc.sum(pc.equal(table[INGEST_ERROR], "unbalanced_quote")).as_py() or 0
        for n in names:
            cols[n].see(readable[n].combine_chunks(), markers)
    delimited = detected.get("format") in ("csv", "tsv")
    if delimited and swallowed and cfg.quoting == "auto":
        # Quotes opened fields that never closed where the sample did not show it: the file
        # uses quotes as data, so propose reading it that way if every line then reads.
        plain = infer(path, cfg.model_copy(update={"quoting": "none"}))
        if plain.rows >= rows:
            return plain
    if cfg.header and delimited and total and (rows < total / 2 or _header_is_data(cols)):
        # Most lines disagree with the first one, or the first line holds the same kind of
        # values as its columns: it is not a header (or not only one).
        return infer(path, cfg.model_copy(update={"header": False}))
    # A marker is missing data where it sits in a column that is otherwise numbers or dates;
    # "?" never is a value in practice (the UCI archive's convention).
    adopted = sorted({m for c in cols.values() for m in c.markers
                      if m == "?" or c.dtype()[0] is not DType.STRING})
    for c in cols.values():
        c.nulls += sum(k for m, k in c.markers.items() if m in adopted)
        for m, k in c.markers.items():
            if m not in adopted:
                c.absorb(m, k)
    proposals = [_propose(cols[n], rows) for n in names]
    # The format as read, so that the next command reads the file the same way whatever its
    # extension (a UCI ".data" file is told from its content only).
    # An absolute path: the proposal is read from wherever the user runs the next command.
    ingest = {"path": str(Path(path).resolve()), "format": detected.get("format", cfg.format)}
    if delimited:
        ingest["delimiter"] = detected["delimiter"]
        if detected.get("quoting") == "none" and cfg.quotechar is not None:
            ingest["quoting"] = "none"
        if detected.get("skipinitialspace"):
            ingest["skipinitialspace"] = True
        if not cfg.header:
            ingest["header"] = False
    if detected.get("encoding") not in (None, "utf-8-sig"):
        ingest["encoding"] = detected["encoding"]
    if adopted:
        ingest["missing_values"] = [*cfg.missing_values, *adopted]
    return Inference(DataContract(columns=tuple(p[0] for p in proposals)),
                     {p[0].name: p[1] for p in proposals}, ingest, rows, Path(path).name)


def infer_contract(path: Path, cfg: IngestConfig) -> DataContract:
    return infer(path, cfg).contract


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)) or v is None:
        return "null" if v is None else repr(v)
    return json.dumps(str(v), ensure_ascii=False)  # a JSON string is a YAML string


def contract_to_yaml(contract: DataContract, notes: dict[str, str] | None = None,
                     ingest: dict[str, Any] | None = None, title: str = "") -> str:
    """The contract (and optional ingest settings) as a pipeline-config YAML with comments."""
    notes = notes or {}
    lines = [
        f"# Data contract proposed by `privgen validate --infer` {title}".rstrip(),
        "# Review every column before use. The role decides what anonymize does with it:",
        "#   id: keyed pseudonym; direct_identifier: dropped; quasi_identifier: generalized;",
        "#   text: personal data scrubbed; category, numeric, datetime, sensitive: kept.",
        "# Use it with `privgen run --config THIS_FILE`, or copy the sections into your config.",
        "# domain: observed marks allowed values and min/max seen in the private data: training",
        "# estimates them under DP from part of the budget (train.privacy.observed_domains).",
        "# Write domain: public only where the data owner publishes those values anyway.",
    ]
    if ingest:
        lines.append("ingest:")
        lines += [f"  {k}: " + (f"[{', '.join(_scalar(x) for x in v)}]" if isinstance(v, list)
                                else _scalar(v)) for k, v in ingest.items()]
    lines += ["contract:", f"  extra_columns: {contract.extra_columns}", "  columns:"]
    bare = ("dtype", "role")
    defaults = ColumnSpec(name="x")
    for spec in contract.columns:
        if spec.name in notes:
            lines.append(f"    # {notes[spec.name]}")
        lines.append(f"    - name: {_scalar(spec.name)}")
        for key in ("dtype", "role", "nullable", "unique", "format", "regex", "min", "max",
                    "earliest", "latest", "domain"):
            value = getattr(spec, key)
            if key in ("dtype", "role", "nullable") or value != getattr(defaults, key):
                text = value.value if key in (*bare, "domain") else _scalar(value)
                lines.append(f"      {key}: {text}")
        if spec.allowed:
            lines.append(f"      allowed: [{', '.join(_scalar(a) for a in spec.allowed)}]")
    return "\n".join(lines) + "\n"
