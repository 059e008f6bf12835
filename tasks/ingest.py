"""Ingest: read a CSV, Parquet or JSONL source into a canonical Parquet copy with lineage."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from tasks import tracking
from tasks.errors import InputError
from tasks.storage import file_digest, write_parquet

SOURCE_ROW = "_source_row"  # 1-based data row number in the source, kept for quarantine reports


class IngestConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # The shipped demo data, so `privgen run` works with no config at all.
    path: Path = Path("data/demo/tickets.csv")
    # "auto" picks the reader from the file extension.
    format: Literal["auto", "csv", "tsv", "parquet", "jsonl"] = "auto"
    encoding: str = "utf-8"
    # Cells exactly equal to one of these markers are missing values.
    missing_values: tuple[str, ...] = ("", "NA", "N/A", "null", "NULL", "None", "nan")


@dataclass(frozen=True)
class IngestResult:
    canonical_path: str
    source: str
    source_digest: str
    rows: int
    columns: list[str]


def _detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    ext = suffixes[-1] if suffixes else ""
    formats = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".jsonl": "jsonl",
               ".ndjson": "jsonl"}
    if ext not in formats:
        raise InputError(
            f"{path}: cannot tell the format from the extension {ext or '(none)'!r}; "
            "use .csv, .tsv, .parquet or .jsonl, or set ingest.format"
        )
    return formats[ext]


def read_source(path: Path, cfg: IngestConfig) -> pd.DataFrame:
    """Read ``path`` as strings (nothing coerced yet), numbering rows from 1 in ``_source_row``."""
    if not path.exists():
        raise InputError(f"{path}: file not found; check ingest.path")
    if path.is_dir():
        raise InputError(f"{path}: is a directory; point ingest.path at a file")
    fmt = _detect_format(path, cfg.format)
    try:
        if fmt in ("csv", "tsv"):
            df = pd.read_csv(
                path, sep="\t" if fmt == "tsv" else ",", dtype=str, encoding=cfg.encoding,
                keep_default_na=False, na_values=list(cfg.missing_values),
                quoting=csv.QUOTE_MINIMAL,
            )
        elif fmt == "parquet":
            df = pd.read_parquet(path).astype("string")
        else:
            df = pd.read_json(path, lines=True, dtype=False).astype("string")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not valid {cfg.encoding} text at byte {exc.start}; set ingest.encoding"
        ) from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot read as {fmt}: {first_line}") from exc
    if df.empty:
        raise InputError(f"{path}: has no data rows; nothing to train on")
    df = df.astype("string")
    df = df.replace({m: pd.NA for m in cfg.missing_values})
    df.insert(0, SOURCE_ROW, pd.RangeIndex(1, len(df) + 1))
    return df


def ingest(cfg: IngestConfig, out_dir: Path) -> IngestResult:
    source = Path(cfg.path)
    df = read_source(source, cfg)
    canonical = write_parquet(df, out_dir / "canonical.parquet")
    return IngestResult(
        canonical_path=str(canonical),
        source=str(source.resolve()),
        source_digest=file_digest(source),
        rows=len(df),
        columns=[c for c in df.columns if c != SOURCE_ROW],
    )


def report_markdown(result: IngestResult) -> str:
    return (
        "# Ingest\n\n"
        f"- source: `{result.source}`\n- sha256: `{result.source_digest}`\n"
        f"- rows: {result.rows}\n- columns: {', '.join(result.columns)}\n"
    )


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(cfg: IngestConfig, out_dir: str, run_id: str) -> IngestResult:
    result = ingest(cfg, Path(out_dir))
    schema = pq.read_schema(result.canonical_path).empty_table().to_pandas()
    tracking.log_dataset(
        run_id, schema.drop(columns=[SOURCE_ROW]), name=Path(result.source).name,
        source=result.source, digest=result.source_digest, context="source", rows=result.rows,
    )
    tracking.log_params(run_id, {"ingest.source_sha256": result.source_digest,
                                 "ingest.rows": result.rows})
    create_markdown_artifact(markdown=report_markdown(result), key="ingest-report")
    get_run_logger().info("ingested %d rows, %d columns", result.rows, len(result.columns))
    return result
