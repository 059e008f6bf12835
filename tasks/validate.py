"""Validate: check rows against the data contract with a GX suite; quarantine the failures.

Rows in = rows kept + rows quarantined, always. Reports carry counts, row numbers and column
names only, never a cell value, because this stage still sees raw personal data.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import great_expectations as gx
import pandas as pd
from great_expectations import expectations as gxe
from great_expectations.data_context.types.base import ProgressBarsConfig
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from tasks import tracking
from tasks.contract import ColumnSpec, DataContract, DType
from tasks.errors import ValidationFailed
from tasks.ingest import SOURCE_ROW
from tasks.storage import write_json, write_parquet

log = logging.getLogger(__name__)

REASON = "_reason"


class ValidateConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # A few bad rows are normal in exports; a flood means the wrong file or a broken upstream
    # job, and training on what is left would silently skew the model.
    max_quarantine_rate: float = Field(default=0.05, ge=0.0, le=1.0)


@dataclass
class ValidationReport:
    rows_in: int
    rows_kept: int
    rows_quarantined: int
    reasons: dict[str, int]
    expectations: list[dict] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def _check_schema(df: pd.DataFrame, contract: DataContract, source: str) -> list[str]:
    actual = [c for c in df.columns if c != SOURCE_ROW]
    missing = [c for c in contract.names if c not in actual]
    if missing:
        raise ValidationFailed(
            f"{source}: columns missing from the input: {', '.join(missing)} "
            f"(expected {', '.join(contract.names)}; found {', '.join(actual)}); "
            "fix the file or the contract"
        )
    return [c for c in actual if c not in contract.names]


def _cast(values: pd.Series, spec: ColumnSpec) -> pd.Series:
    if spec.dtype is DType.INTEGER:
        numbers = pd.to_numeric(values, errors="coerce")
        whole = numbers.where(numbers.isna() | (numbers % 1 == 0))
        return whole.astype("Int64")
    if spec.dtype is DType.FLOAT:
        return pd.to_numeric(values, errors="coerce").astype("Float64")
    if spec.dtype in (DType.DATE, DType.DATETIME):
        return pd.to_datetime(values, errors="coerce", format="ISO8601")
    return values.astype("string")


def build_suite(contract: DataContract) -> gx.ExpectationSuite:
    """The GX suite the contract implies: presence, not-null, unique, ranges, formats, sets."""
    suite = gx.ExpectationSuite(name="privgen-contract")
    for spec in contract.columns:
        col = spec.name
        suite.add_expectation(gxe.ExpectColumnToExist(column=col))
        if not spec.nullable:
            suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=col))
        if spec.unique:
            suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column=col))
        if spec.min is not None or spec.max is not None:
            suite.add_expectation(
                gxe.ExpectColumnValuesToBeBetween(column=col, min_value=spec.min,
                                                  max_value=spec.max)
            )
        if spec.regex:
            suite.add_expectation(gxe.ExpectColumnValuesToMatchRegex(column=col, regex=spec.regex))
        if spec.allowed:
            suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column=col,
                                                                  value_set=list(spec.allowed)))
    return suite


def _run_suite(typed: pd.DataFrame, contract: DataContract) -> list:
    context = gx.get_context(mode="ephemeral")
    # GX draws tqdm bars on stderr, over the CLI's own progress display.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    suite = build_suite(contract)
    asset = context.data_sources.add_pandas("privgen").add_dataframe_asset("records")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
        batch_parameters={"dataframe": typed}
    )
    result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    return list(result.results)


def validate(
    df: pd.DataFrame, contract: DataContract, source: str = "input"
) -> tuple[pd.DataFrame, pd.DataFrame, ValidationReport]:
    """Split ``df`` into (kept typed rows, quarantined raw rows with a reason each, report)."""
    extra = _check_schema(df, contract, source)
    df = df.reset_index(drop=True)
    reasons: dict[int, list[str]] = {}

    typed = pd.DataFrame(index=df.index)
    for spec in contract.columns:
        typed[spec.name] = _cast(df[spec.name], spec)
        bad_type = df[spec.name].notna() & typed[spec.name].isna()
        for i in df.index[bad_type]:
            reasons.setdefault(int(i), []).append(f"type:{spec.name}")

    expectations = []
    for res in _run_suite(typed, contract):
        cfg = res.expectation_config
        col = cfg.kwargs.get("column")
        kind = cfg.type.removeprefix("expect_column_values_to_").removeprefix("expect_column_")
        unexpected = [int(i) for i in (res.result or {}).get("unexpected_index_list") or []]
        if kind == "be_unique":
            # The first occurrence of an id is a valid record; only the repeats are bad.
            repeats = set(df.index[typed[col].duplicated(keep="first") & typed[col].notna()])
            unexpected = [i for i in unexpected if i in repeats]
        for i in unexpected:
            reasons.setdefault(i, []).append(f"{kind}:{col}")
        expectations.append({"expectation": cfg.type, "column": col, "success": res.success,
                             "unexpected_count": len(unexpected)})

    bad = sorted(reasons)
    quarantined = df.loc[bad].copy()
    quarantined[REASON] = ["; ".join(reasons[i]) for i in bad]
    kept = typed.drop(index=bad)
    kept.insert(0, SOURCE_ROW, df.loc[kept.index, SOURCE_ROW].astype("int64"))
    counts = Counter(r for i in bad for r in reasons[i])
    report = ValidationReport(
        rows_in=len(df), rows_kept=len(kept), rows_quarantined=len(quarantined),
        reasons=dict(sorted(counts.items())), expectations=expectations, extra_columns=extra,
    )
    assert report.rows_in == report.rows_kept + report.rows_quarantined
    return kept.reset_index(drop=True), quarantined.reset_index(drop=True), report


def check_rate(report: ValidationReport, cfg: ValidateConfig, source: str) -> None:
    rate = report.rows_quarantined / max(report.rows_in, 1)
    if rate > cfg.max_quarantine_rate:
        top = ", ".join(f"{r} ×{n}" for r, n in Counter(report.reasons).most_common(5))
        raise ValidationFailed(
            f"{source}: {report.rows_quarantined} of {report.rows_in} rows ({rate:.1%}) failed "
            f"the contract, above validate.max_quarantine_rate={cfg.max_quarantine_rate:.1%} "
            f"(top reasons: {top}); fix the input or raise the threshold"
        )


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


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(canonical_path: str, source: str, contract: DataContract,
                  cfg: ValidateConfig, out_dir: str, run_id: str) -> dict:
    out = Path(out_dir)
    kept, quarantined, report = validate(pd.read_parquet(canonical_path), contract, source)
    kept_path = write_parquet(kept, out / "validated.parquet")
    quarantine_path = write_parquet(quarantined, out / "quarantine.parquet")
    write_json(report.to_dict(), out / "validation_report.json")
    tracking.log_dict(run_id, report.to_dict(), "reports/validation_report.json")
    tracking.log_metrics(run_id, {"validate.rows_in": report.rows_in,
                                  "validate.rows_kept": report.rows_kept,
                                  "validate.rows_quarantined": report.rows_quarantined})
    create_markdown_artifact(markdown=report_markdown(report, str(quarantine_path)),
                             key="validate-report")
    get_run_logger().info("validated: %d kept, %d quarantined", report.rows_kept,
                          report.rows_quarantined)
    check_rate(report, cfg, source)
    return {"validated_path": str(kept_path), "quarantine_path": str(quarantine_path),
            "rows_in": report.rows_in, "rows_kept": report.rows_kept,
            "rows_quarantined": report.rows_quarantined}
