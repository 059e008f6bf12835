"""Validate: check rows against the data contract with a GX suite; quarantine the failures.

Rows in = rows kept + rows quarantined, always. Reports carry counts, row numbers and column
names only, never a cell value, because this stage still sees raw personal data.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import great_expectations as gx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from great_expectations import expectations as gxe
from great_expectations.data_context.types.base import ProgressBarsConfig
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from tasks import tracking
from tasks.contract import ColumnSpec, DataContract, DType
from tasks.errors import InputError, ValidationFailed
from tasks.ingest import (
    ERASED,
    INGEST_ERROR,
    REASON,
    SOURCE_ROW,
    IngestConfig,
    ingest,
    reparse,
)
from tasks.sources import META
from tasks.storage import file_digest, write_json, write_text

# Spreadsheet formulas and DDE payloads (CWE-1236, OWASP "CSV injection"): a leading "=", or
# "+", "-", "@" followed by a function call, a pipe or a cell reference. Phone numbers
# ("+1 (555) 010-0199") and negative numbers do not match.
FORMULA = r"^[\t\r\n ]*(=|[+\-@].*([A-Za-z_][A-Za-z0-9_.]*\(|[A-Za-z]\||![$A-Za-z]+\$?[0-9]))"
SAMPLE_ROWS = 20  # row numbers listed per reason in reports


class ValidateConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # A few bad rows are normal in exports; a flood means the wrong file or a broken upstream
    # job, and training on what is left would silently skew the model.
    max_quarantine_rate: float = Field(default=0.05, ge=0.0, le=1.0)
    # Formula-like text is quarantined, not rewritten: raw data is never modified, and a model
    # that learns "=cmd|..." writes it into synthetic CSVs that someone opens in a spreadsheet.
    # "allow" where formulas are genuine content.
    formulas: Literal["quarantine", "allow"] = "quarantine"
    # Rows checked at once: bounds memory whatever the input size.
    chunk_rows: int = Field(default=250_000, gt=0)


@dataclass
class ValidationReport:
    rows_in: int
    rows_kept: int
    rows_quarantined: int
    reasons: dict[str, int]
    expectations: list[dict] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    source: str = ""
    columns_expected: list[str] = field(default_factory=list)
    columns_found: list[str] = field(default_factory=list)
    empty_columns: list[str] = field(default_factory=list)
    # reason → the first source row numbers that carry it (numbers only, never values)
    quarantined_rows: dict[str, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return self.__dict__.copy()


@dataclass(frozen=True)
class ValidationOutcome:
    kept_path: str
    quarantine_path: str
    report_path: str
    html_path: str
    report: ValidationReport


def data_columns(columns: list[str]) -> list[str]:
    return [c for c in columns if c not in META and c != REASON]


def check_schema(columns: list[str], contract: DataContract, source: str) -> list[str]:
    """Raise ValidationFailed with an expected-vs-found diff on drift; return ignored extras."""
    found, expected = data_columns(columns), contract.names
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    if missing or (extra and contract.extra_columns == "fail"):
        hints = []
        for i, name in enumerate(expected):
            if name in missing and i < len(found) and found[i] in extra:
                same = found[i].strip().lower() == name.lower()
                hints.append(f"{found[i]!r} sits where {name!r} was expected "
                             f"({'differs only in case or spaces' if same else 'renamed?'})")
        raise ValidationFailed(
            f"{source}: schema drift: expected columns [{', '.join(expected)}], found "
            f"[{', '.join(found)}]" + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; not in the contract: {', '.join(extra)}" if extra else "")
            + (f"; {'; '.join(hints)}" if hints else "")
            + "; fix the source, or update the contract (privgen validate INPUT --infer "
            "FILE proposes one; contract.extra_columns: ignore drops unnamed columns)"
        )
    return extra


def cast(values: pd.Series, spec: ColumnSpec) -> pd.Series:
    """The column as its contract type; a value that does not convert becomes null."""
    if spec.dtype is DType.INTEGER:
        numbers = pd.to_numeric(values, errors="coerce")
        whole = numbers.where(numbers.isna() | (numbers % 1 == 0))
        return whole.astype("Int64")
    if spec.dtype is DType.FLOAT:
        return pd.to_numeric(values, errors="coerce").astype("Float64")
    if spec.dtype in (DType.DATE, DType.DATETIME):
        fmt = spec.format or "ISO8601"
        try:
            return pd.to_datetime(values, errors="coerce", format=fmt)
        except ValueError:  # mixed UTC offsets: compare them on one clock
            return pd.to_datetime(values, errors="coerce", format=fmt, utc=True)
    return values.astype("string")


def build_suite(contract: DataContract) -> gx.ExpectationSuite:
    """The GX suite the contract implies: presence, not-null, ranges, formats, sets.

    Uniqueness is checked by privgen itself, across all chunks of the input: GX sees one
    chunk at a time and would miss a repeat that lands in another chunk.
    """
    suite = gx.ExpectationSuite(name="privgen-contract")
    for spec in contract.columns:
        col = spec.name
        suite.add_expectation(gxe.ExpectColumnToExist(column=col))
        if not spec.nullable:
            suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=col))
        if spec.min is not None or spec.max is not None:
            suite.add_expectation(
                gxe.ExpectColumnValuesToBeBetween(column=col, min_value=spec.min,
                                                  max_value=spec.max)
            )
        if (bounds := spec.date_bounds()) is not None:  # _run_gx hands GX naive UTC times
            suite.add_expectation(
                gxe.ExpectColumnValuesToBeBetween(column=col, min_value=pd.Timestamp(bounds[0]),
                                                  max_value=pd.Timestamp(bounds[1])))
        if spec.regex:
            suite.add_expectation(gxe.ExpectColumnValuesToMatchRegex(column=col, regex=spec.regex))
        if spec.allowed:
            suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column=col,
                                                                  value_set=list(spec.allowed)))
    return suite


def _key(values: pd.Series) -> np.ndarray:
    """64-bit hashes of the values' text, equal for equal values whatever their storage."""
    return pd.util.hash_pandas_object(values.astype("string"), index=False).to_numpy()


class Checker:
    """Checks chunk after chunk against one contract, remembering what spans chunks."""

    def __init__(self, contract: DataContract, cfg: ValidateConfig, source: str,
                 columns_found: list[str], extra: list[str]) -> None:
        self.contract, self.cfg, self.source = contract, cfg, source
        context = gx.get_context(mode="ephemeral")
        # GX draws tqdm bars on stderr, over the CLI's own progress display.
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.suite = build_suite(contract)
        asset = context.data_sources.add_pandas("privgen").add_dataframe_asset("records")
        self.batches = asset.add_batch_definition_whole_dataframe("all")
        self.seen = {c.name: np.empty(0, np.uint64) for c in contract.columns if c.unique}
        self.nonnull = dict.fromkeys(contract.names, 0)
        self.rows_in = self.rows_kept = self.readable = 0
        self.reasons: Counter[str] = Counter()
        self.samples: dict[str, list[int]] = {}
        self.expectations: dict[tuple[str, str | None], dict] = {}
        self.columns_found, self.extra = columns_found, extra

    def remember(self, kept: pd.DataFrame) -> None:
        """Count ``kept``'s values as seen, so a replay cannot bring back a duplicate."""
        for col in self.seen:
            if col in kept.columns:
                self.seen[col] = np.union1d(self.seen[col], _key(kept[col].dropna()))

    def _expect(self, kind: str, col: str | None, unexpected: int) -> None:
        entry = self.expectations.setdefault((kind, col), {
            "expectation": kind, "column": col, "success": True, "unexpected_count": 0})
        entry["unexpected_count"] += unexpected
        entry["success"] = entry["success"] and unexpected == 0

    def check(self, df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Split one chunk into (kept typed rows, quarantined raw rows with a reason each)."""
        df = df.reset_index(drop=True)
        reasons: dict[int, list[str]] = {}
        errors = df[INGEST_ERROR] if INGEST_ERROR in df.columns else pd.Series(pd.NA, df.index)
        readable = errors.isna().to_numpy()
        for i in np.flatnonzero(~readable):
            reasons[int(i)] = [str(errors.iloc[i])]

        typed = pd.DataFrame(index=df.index)
        for spec in self.contract.columns:
            typed[spec.name] = cast(df[spec.name], spec)
            bad_type = df[spec.name].notna().to_numpy() & typed[spec.name].isna().to_numpy()
            for i in np.flatnonzero(bad_type & readable):
                reasons.setdefault(int(i), []).append(f"type:{spec.name}")
            self._expect("privgen_expect_column_values_to_convert_to_dtype", spec.name,
                         int((bad_type & readable).sum()))
            self.nonnull[spec.name] += int((df[spec.name].notna().to_numpy() & readable).sum())

        if readable.any():
            self._run_gx(typed[readable], reasons)
        self._check_unique(typed, readable, reasons)
        if self.cfg.formulas == "quarantine":
            self._check_formulas(df, readable, reasons)

        bad = sorted(reasons)
        quarantined = df.loc[bad].drop(columns=[INGEST_ERROR], errors="ignore")
        quarantined[REASON] = pd.array(["; ".join(reasons[i]) for i in bad], dtype="string")
        kept = typed.drop(index=bad)
        kept.insert(0, SOURCE_ROW, df.loc[kept.index, SOURCE_ROW].astype("int64"))
        for i in bad:
            for r in reasons[i]:
                self.reasons[r] += 1
                rows = self.samples.setdefault(r, [])
                if len(rows) < SAMPLE_ROWS:
                    rows.append(int(df.at[i, SOURCE_ROW]))
        self.rows_in += len(df)
        self.rows_kept += len(kept)
        self.readable += int(readable.sum())
        return kept.reset_index(drop=True), quarantined.reset_index(drop=True)

    def _run_gx(self, typed: pd.DataFrame, reasons: dict[int, list[str]]) -> None:
        # Date bounds are naive UTC instants; an offset-aware column is compared on that clock.
        aware = [c for c in typed.columns if isinstance(typed[c].dtype, pd.DatetimeTZDtype)]
        if aware:
            typed = typed.assign(**{c: typed[c].dt.tz_convert(None) for c in aware})
        batch = self.batches.get_batch(batch_parameters={"dataframe": typed})
        result = batch.validate(self.suite, result_format={"result_format": "COMPLETE"})
        for res in result.results:
            cfg = res.expectation_config
            col = cfg.kwargs.get("column")
            kind = cfg.type.removeprefix("expect_column_values_to_").removeprefix("expect_column_")
            unexpected = [int(i) for i in (res.result or {}).get("unexpected_index_list") or []]
            for i in unexpected:
                reasons.setdefault(i, []).append(f"{kind}:{col}")
            self._expect(cfg.type, col, len(unexpected))

    def _check_unique(self, typed: pd.DataFrame, readable: np.ndarray,
                      reasons: dict[int, list[str]]) -> None:
        # The first occurrence of an id is a valid record; only the repeats are bad.
        for col, seen in self.seen.items():
            values = typed[col][readable & typed[col].notna().to_numpy()]
            keys = _key(values)
            repeat = pd.Series(keys).duplicated(keep="first").to_numpy() | np.isin(keys, seen)
            for i in values.index[repeat]:
                reasons.setdefault(int(i), []).append(f"be_unique:{col}")
            self.seen[col] = np.union1d(seen, keys)
            self._expect("expect_column_values_to_be_unique", col, int(repeat.sum()))

    def _check_formulas(self, df: pd.DataFrame, readable: np.ndarray,
                        reasons: dict[int, list[str]]) -> None:
        for spec in self.contract.columns:
            if spec.dtype is not DType.STRING:
                continue
            hits = df[spec.name].str.match(FORMULA).fillna(False).to_numpy(dtype=bool)
            for i in np.flatnonzero(hits & readable):
                reasons.setdefault(int(i), []).append(f"formula:{spec.name}")
            self._expect("privgen_expect_column_values_to_not_be_formulas", spec.name,
                         int((hits & readable).sum()))

    def report(self) -> ValidationReport:
        empty = [c for c, n in self.nonnull.items() if n == 0 and self.readable]
        return ValidationReport(
            rows_in=self.rows_in, rows_kept=self.rows_kept,
            rows_quarantined=self.rows_in - self.rows_kept,
            reasons=dict(sorted(self.reasons.items())),
            expectations=list(self.expectations.values()), extra_columns=self.extra,
            source=self.source, columns_expected=self.contract.names,
            columns_found=self.columns_found, empty_columns=empty,
            quarantined_rows=dict(sorted(self.samples.items())),
        )


def validate(
    df: pd.DataFrame, contract: DataContract, source: str = "input",
    cfg: ValidateConfig | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, ValidationReport]:
    """Split ``df`` into (kept typed rows, quarantined raw rows with a reason each, report)."""
    extra = check_schema(list(df.columns), contract, source)
    if df.empty:
        raise ValidationFailed(f"{source}: has no rows to validate; check the export")
    checker = Checker(contract, cfg or ValidateConfig(), source, data_columns(list(df.columns)),
                      extra)
    kept, quarantined = checker.check(df)
    report = checker.report()
    assert report.rows_in == report.rows_kept + report.rows_quarantined
    return kept, quarantined, report


# Per reason code, what a person can do about it.
_HINTS = {
    "type": "did the column's type change upstream? fix the export or the column's dtype",
    "bad_encoding": "set ingest.encoding (e.g. cp1252 or latin-1)",
    "ragged_row": "check ingest.delimiter and the quoting of those lines",
    "bad_csv": "check ingest.quotechar and ingest.escapechar",
    "bad_json": "those lines are not valid JSON",
    "not_an_object": "each JSONL line must be one JSON object",
    "field_too_long": "raise ingest.max_field_bytes if such fields are genuine",
    "formula": "set validate.formulas: allow if formulas are genuine content",
    "be_unique": "the source repeats ids",
    "be_between": "values outside the contract's min/max or earliest/latest: fix the source, "
                  "or widen the bounds if they are genuine",
}


def check_rate(report: ValidationReport, cfg: ValidateConfig, source: str) -> None:
    # Rows withheld on an erasure request (tasks/erasure.py) are no data fault.
    faulty = report.rows_quarantined - report.reasons.get(ERASED, 0)
    rate = faulty / max(report.rows_in, 1)
    if rate > cfg.max_quarantine_rate:
        top = Counter(report.reasons).most_common(5)
        hints = {_HINTS[r.split(":")[0]] for r, _ in top if r.split(":")[0] in _HINTS}
        raise ValidationFailed(
            f"{source}: {faulty} of {report.rows_in} rows ({rate:.1%}) failed "
            f"the contract, above validate.max_quarantine_rate={cfg.max_quarantine_rate:.1%} "
            f"(top reasons: {', '.join(f'{r} ×{n}' for r, n in top)})"
            + (f"; {'; '.join(sorted(hints))}" if hints else "")
            + "; fix the input or the contract, or raise the threshold"
        )


def check_batch(report: ValidationReport, contract: DataContract, cfg: ValidateConfig,
                source: str) -> None:
    """Batch-level failures: a required column empty throughout, then the quarantine rate."""
    nullable = {c.name: c.nullable for c in contract.columns}
    required_empty = [c for c in report.empty_columns if not nullable.get(c, True)]
    if required_empty:
        raise ValidationFailed(
            f"{source}: column(s) {', '.join(required_empty)} are empty in every one of "
            f"{report.rows_in} rows, though the contract requires values (expected: non-null; "
            "found: all null); the export probably dropped them: fix the source, or mark them "
            "nullable in the contract"
        )
    check_rate(report, cfg, source)


def _writer_for(path: Path, table: pa.Table, writers: dict) -> pq.ParquetWriter:
    if path not in writers:
        writers[path] = pq.ParquetWriter(path, table.schema, compression="zstd")
    return writers[path]


def validate_parquet(canonical_path: Path, contract: DataContract, cfg: ValidateConfig,
                     source: str, out_dir: Path, prefix: str = "",
                     checker: Checker | None = None) -> ValidationOutcome:
    """Validate a canonical Parquet file chunk by chunk into kept and quarantine files plus
    JSON and HTML reports; raises only for schema drift (see check_batch for the rest)."""
    pf = pq.ParquetFile(canonical_path)
    found = pf.schema_arrow.names
    # How the source was read travels on, so a replay can parse unsplit lines again.
    provenance = {k: v for k, v in (pf.schema_arrow.metadata or {}).items() if k == b"privgen"}
    extra = check_schema(found, contract, source)
    checker = checker or Checker(contract, cfg, source, data_columns(found), extra)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = {"kept": f"{prefix}validated.parquet", "quarantine": f"{prefix}quarantine.parquet"}
    final = {k: out_dir / v for k, v in names.items()}
    tmp = {k: out_dir / f".{v}.tmp" for k, v in names.items()}
    writers: dict = {}
    schemas: dict[str, pa.Schema] = {}
    try:
        for batch in pf.iter_batches(batch_size=cfg.chunk_rows):
            chunk = batch.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
            for kind, frame in zip(("kept", "quarantine"), checker.check(chunk), strict=True):
                table = pa.Table.from_pandas(frame, preserve_index=False)
                schema = schemas.setdefault(kind, table.schema.with_metadata(
                    {**(table.schema.metadata or {}), **provenance}))
                table = table.cast(schema)  # the writer keeps the provenance for replays
                _writer_for(tmp[kind], table, writers).write_table(table)
        missing = [k for k in ("kept", "quarantine") if k not in schemas]
        if missing:  # every row went one way: the other file is empty but has its columns
            empty = dict(zip(("kept", "quarantine"), checker.check(
                pf.schema_arrow.empty_table().to_pandas()), strict=True))
            for kind in missing:
                pq.write_table(pa.Table.from_pandas(empty[kind], preserve_index=False), tmp[kind])
    except BaseException:
        for w in writers.values():
            w.close()
        for t in tmp.values():
            t.unlink(missing_ok=True)
        raise
    for w in writers.values():
        w.close()
    for kind in ("kept", "quarantine"):
        tmp[kind].replace(final[kind])
    report = checker.report()
    assert report.rows_in == report.rows_kept + report.rows_quarantined
    report_path = write_json(report.to_dict(), out_dir / f"{prefix}validation_report.json")
    html_path = write_text(report_html(report), out_dir / f"{prefix}validation_report.html")
    return ValidationOutcome(str(final["kept"]), str(final["quarantine"]), str(report_path),
                             str(html_path), report)


def validate_file(path: Path, contract: DataContract, ingest_cfg: IngestConfig,
                  cfg: ValidateConfig, out_dir: Path, erased=None) -> ValidationOutcome:
    """`privgen validate INPUT`: ingest one file and validate it, writing into ``out_dir``
    canonical.parquet, validated.parquet, quarantine.parquet and the JSON and HTML reports.
    ``erased``: the erasure suppressor ingest applies (``tasks.erasure.ingest_suppressor``).

    Raises InputError for an unreadable source and ValidationFailed for a batch failure, after
    the reports are written."""
    ingested = ingest(ingest_cfg.model_copy(update={"path": Path(path)}), Path(out_dir), erased)
    outcome = validate_parquet(Path(ingested.canonical_path), contract, cfg, str(path),
                               Path(out_dir))
    check_batch(outcome.report, contract, cfg, str(path))
    return outcome


def replay(quarantine_path: Path, contract: DataContract, ingest_cfg: IngestConfig,
           cfg: ValidateConfig, out_dir: Path, kept_path: Path | None = None) -> ValidationOutcome:
    """`privgen validate --replay QUARANTINE`: check quarantined rows again after a fix to the
    contract or the ingest settings, writing replay_validated.parquet (rows that now pass),
    replay_quarantine.parquet (rows that still fail) and replay reports into ``out_dir``.

    Lines that could not be split into columns are parsed again from their raw text with the
    current ingest settings. Ids already kept by the first run (``kept_path``, by default the
    validated.parquet beside the quarantine file) still count, so a replay never lets a
    duplicate through. No rate check: every row here failed once.
    """
    quarantine_path = Path(quarantine_path)
    if not quarantine_path.is_file():
        raise InputError(f"{quarantine_path}: quarantine file not found; give the "
                         "quarantine.parquet a validate run wrote")
    table = pq.read_table(quarantine_path)
    names = data_columns(table.column_names)
    detected = json.loads((table.schema.metadata or {}).get(b"privgen", b"{}"))
    table = reparse(table, names, detected, ingest_cfg)
    canonical = Path(out_dir) / ".replay_canonical.parquet"
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    pq.write_table(table, canonical)
    try:
        found = table.column_names
        checker = Checker(contract, cfg, str(quarantine_path), data_columns(found),
                          check_schema(found, contract, str(quarantine_path)))
        kept_path = Path(kept_path) if kept_path else quarantine_path.with_name(
            quarantine_path.name.replace("quarantine", "validated"))
        if kept_path.is_file() and checker.seen:
            checker.remember(pd.read_parquet(kept_path, columns=list(checker.seen)))
        return validate_parquet(canonical, contract, cfg, str(quarantine_path), Path(out_dir),
                                prefix="replay_", checker=checker)
    finally:
        canonical.unlink(missing_ok=True)


def report_markdown(report: ValidationReport, quarantine_path: str) -> str:
    lines = [
        "# Validation", "",
        f"- rows in: {report.rows_in}", f"- rows kept: {report.rows_kept}",
        f"- rows quarantined: {report.rows_quarantined} (file: `{quarantine_path}`)", "",
        "| expectation | column | success | unexpected rows |", "|---|---|---|---|",
    ]
    lines += [f"| {e['expectation']} | {e['column']} | {e['success']} | {e['unexpected_count']} |"
              for e in report.expectations]
    if report.extra_columns:
        extra = ", ".join(report.extra_columns)
        lines += ["", f"Columns not in the contract, not passed on: {extra}"]
    return "\n".join(lines) + "\n"


def report_html(report: ValidationReport) -> str:
    """A self-contained page of counts, row numbers and column names; no cell values."""
    e = html.escape

    def table(head: list[str], rows: list[list]) -> str:
        th = "".join(f"<th>{e(h)}</th>" for h in head)
        body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>"
                       for r in rows)
        return f"<table><tr>{th}</tr>{body}</table>"

    rate = report.rows_quarantined / max(report.rows_in, 1)
    reasons = [[r, n, ", ".join(map(str, report.quarantined_rows.get(r, [])))]
               for r, n in sorted(report.reasons.items(), key=lambda kv: -kv[1])]
    expectations = [[x["expectation"], x["column"], "pass" if x["success"] else "FAIL",
                     x["unexpected_count"]] for x in report.expectations]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>privgen validation report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style></head><body>
<h1>Validation report</h1>
<p>Source: <code>{e(report.source)}</code></p>
<p>{report.rows_in} rows in, {report.rows_kept} kept, {report.rows_quarantined} quarantined
({rate:.2%}).</p>
<h2>Columns</h2>
{table(["expected", "found", "not in contract", "empty in every row"],
       [[", ".join(report.columns_expected), ", ".join(report.columns_found),
         ", ".join(report.extra_columns) or "-", ", ".join(report.empty_columns) or "-"]])}
<h2>Quarantine reasons</h2>
{table(["reason", "rows", f"first {SAMPLE_ROWS} source rows"], reasons)}
<h2>Expectations</h2>
{table(["expectation", "column", "result", "unexpected rows"], expectations)}
<p>Counts, row numbers and column names only: no cell value appears in this report.</p>
</body></html>
"""


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(canonical_path: str, source: str, contract: DataContract,
                  cfg: ValidateConfig, out_dir: str, run_id: str) -> dict:
    outcome = validate_parquet(Path(canonical_path), contract, cfg, source, Path(out_dir))
    report = outcome.report
    tracking.log_dict(run_id, report.to_dict(), "reports/validation_report.json")
    tracking.log_artifact(run_id, Path(outcome.html_path), "reports")
    tracking.log_metrics(run_id, {"validate.rows_in": report.rows_in,
                                  "validate.rows_kept": report.rows_kept,
                                  "validate.rows_quarantined": report.rows_quarantined})
    kept_schema = pq.read_schema(outcome.kept_path).empty_table().to_pandas()
    tracking.log_dataset(
        run_id, kept_schema.drop(columns=[SOURCE_ROW]), name=f"{Path(source).name} (validated)",
        source=source, digest=file_digest(Path(outcome.kept_path)), context="validated",
        rows=report.rows_kept, tags={"rows_in": report.rows_in,
                                     "rows_quarantined": report.rows_quarantined},
    )
    create_markdown_artifact(markdown=report_markdown(report, outcome.quarantine_path),
                             key="validate-report")
    get_run_logger().info("validated: %d kept, %d quarantined", report.rows_kept,
                          report.rows_quarantined)
    check_batch(report, contract, cfg, source)
    return {"validated_path": outcome.kept_path, "quarantine_path": outcome.quarantine_path,
            "rows_in": report.rows_in, "rows_kept": report.rows_kept,
            "rows_quarantined": report.rows_quarantined,
            "rows_erased": report.reasons.get(ERASED, 0)}
