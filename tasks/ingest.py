"""Ingest: read a CSV/TSV, JSONL, Parquet or SQL source into a canonical Parquet copy.

The copy holds every record of the source as strings, numbered, with the line it starts on;
a record that cannot be read into the header's columns (a ragged line, broken JSON, bytes
in the wrong encoding, an oversized field) is kept with a reason code for validate to
quarantine, so nothing is lost and one bad line never fails the batch.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks import sources, sources_csv, sources_sql, tracking
from tasks.errors import InputError
from tasks.sniff import format_from_content
from tasks.sources import INGEST_ERROR, META, RAW, REASON, SOURCE_LINE, SOURCE_ROW, Opened
from tasks.sources_config import IngestConfig, SqlSource
from tasks.storage import atomic_write, file_digest

__all__ = ["INGEST_ERROR", "RAW", "REASON", "SOURCE_LINE", "SOURCE_ROW", "IngestConfig",
           "SqlSource"]

# Names that download tools and writers give a file until it is complete.
PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".filepart")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


@dataclass(frozen=True)
class IngestResult:
    canonical_path: str
    source: str
    source_digest: str
    rows: int
    columns: list[str]
    rows_unreadable: int = 0
    detected: dict[str, Any] = field(default_factory=dict)
    rows_erased: int = 0  # rows of subjects who asked to be erased (tasks/erasure.py)


_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".jsonl": "jsonl",
               ".ndjson": "jsonl"}

# Formats privgen does not read: refused by name rather than misread as delimited text.
_FOREIGN = {".xlsx", ".xlsm", ".xls", ".ods", ".zip", ".pdf", ".json", ".xml", ".sav",
            ".sas7bdat", ".dta", ".feather", ".arrow", ".db", ".sqlite", ".h5", ".pkl"}


def detect_format(path: Path, cfg: IngestConfig) -> str:
    """The configured format, else the extension's, else the content's (UCI ``.data`` files,
    ``.txt`` exports, no extension): Parquet by its magic number, JSON Lines by a first line
    that is a JSON object, any other text as delimited. Bytes that are no text are refused,
    naming what they look like."""
    if cfg.format != "auto":
        return cfg.format
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    ext = suffixes[-1] if suffixes else ""
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    if ext in _FOREIGN:
        raise InputError(f"{path}: cannot tell the format of {ext} files, which privgen does "
                         "not read; export the data as CSV, TSV, JSON Lines or Parquet, or set "
                         "ingest.format if it is one of those")
    try:
        return format_from_content(sources.head_bytes(path, cfg))
    except ValueError as exc:
        raise sources.not_text(path, str(exc)) from None


def check_path(path: Path, cfg: IngestConfig) -> Path:
    """Refuse what is not a complete local file the config allows; return it resolved."""
    text = str(path)
    if _URI.match(text):
        scheme = text.split(":", 1)[0]
        raise InputError(f"{text}: {scheme}:// sources are not supported; copy the file to local "
                         "disk first, or read a database through ingest.sql")
    if not path.exists():
        raise InputError(f"{path}: file not found; check ingest.path")
    resolved = path.resolve()
    if cfg.allowed_root is not None:
        root = Path(cfg.allowed_root).resolve()
        if not resolved.is_relative_to(root):
            raise InputError(f"{path}: resolves to {resolved}, outside ingest.allowed_root={root} "
                             "(through '..' or a symlink); move the file under that folder or "
                             "change allowed_root")
    if resolved.is_dir():
        raise InputError(f"{path}: is a directory; point ingest.path at a file")
    if not resolved.is_file():
        raise InputError(f"{path}: is not a regular file (a pipe or device never ends); point "
                         "ingest.path at a file")
    if any(s.lower() in PARTIAL_SUFFIXES for s in path.suffixes) or path.name.endswith("~"):
        raise InputError(f"{path}: its name marks a file still being written or downloaded; wait "
                         "until it is complete and renamed, then point ingest.path at that")
    size = resolved.stat().st_size
    if size > cfg.max_bytes:
        raise InputError(f"{path}: is {size} bytes, over ingest.max_bytes={cfg.max_bytes}; raise "
                         "the cap if the file is genuine")
    if size == 0:
        raise InputError(f"{path}: is empty (0 bytes); point ingest.path at the exported file")
    return resolved


def open_source(cfg: IngestConfig) -> Opened:
    """The configured source, opened: its columns and a stream of raw string chunks."""
    if cfg.sql is not None:
        return sources_sql.read_sql(cfg.sql, cfg)
    path = Path(cfg.path)
    check_path(path, cfg)
    fmt = detect_format(path, cfg)
    if fmt == "parquet":
        return sources.read_parquet(path, cfg)
    if fmt == "jsonl":
        return sources.read_jsonl(path, cfg)
    return sources_csv.read_csv(path, cfg, fmt)


def clean_chunk(table: pa.Table, names: list[str], cfg: IngestConfig) -> pa.Table:
    """Missing-value markers to nulls; a field over ingest.max_field_bytes flags its record."""
    markers = pa.array(list(cfg.missing_values), pa.string())
    errors = None
    for name in names:
        col = table[name]
        if len(markers):
            col = pc.if_else(pc.is_in(col, value_set=markers), None, col)
            table = table.set_column(table.schema.get_field_index(name), name, col)
        too_long = pc.greater(pc.binary_length(col), cfg.max_field_bytes)
        if pc.any(too_long).as_py():
            errors = errors or table[INGEST_ERROR].to_pylist()
            for i in pc.indices_nonzero(pc.fill_null(too_long, False)).to_pylist():
                errors[i] = errors[i] or f"field_too_long:{name}"
    if errors is not None:
        table = table.set_column(table.schema.get_field_index(INGEST_ERROR), INGEST_ERROR,
                                 pa.array(errors, pa.string()))
    return table


def records(cfg: IngestConfig) -> tuple[list[str], Iterator[pa.Table], dict[str, Any]]:
    """Columns, canonical chunks (strings + row/line numbers + reasons) and what was detected."""
    opened = open_source(cfg)
    meta = {b"privgen": json.dumps(opened.detected).encode()}

    def chunks() -> Iterator[pa.Table]:
        row = 1
        for table in opened.chunks:
            table = clean_chunk(table, opened.columns, cfg)
            numbers = pa.array(range(row, row + table.num_rows), pa.int64())
            table = table.add_column(0, SOURCE_ROW, numbers)
            yield table.select([SOURCE_ROW, *opened.columns, *META[1:]]).replace_schema_metadata(
                meta)
            row += table.num_rows

    return opened.columns, chunks(), opened.detected


# Reasons ingest gives a record it could not split; a replay parses its raw text again.
_REPARSE = ("ragged_row", "bad_csv", "unbalanced_quote", "bad_json", "not_an_object")


def _parse_record(raw: str, names: list[str], detected: dict[str, Any],
                  cfg: IngestConfig) -> list[str | None] | None:
    if detected.get("format") in ("csv", "tsv"):
        return sources_csv.parse_line(raw, names, detected, cfg)
    if detected.get("format") == "jsonl":
        return sources.parse_json_line(raw, names, detected)
    return None


def reparse(quarantined: pa.Table, names: list[str], detected: dict[str, Any],
            cfg: IngestConfig) -> pa.Table:
    """Quarantined rows back to canonical form, with unsplit records parsed again under the
    current settings and size caps checked again; undecodable bytes stay quarantined."""
    raws = quarantined[RAW].to_pylist() if RAW in quarantined.column_names else [None] * len(
        quarantined)
    reasons = quarantined[REASON].to_pylist()
    columns = {n: quarantined[n].to_pylist() for n in names}
    errors: list[str | None] = []
    for i, (raw, reason) in enumerate(zip(raws, reasons, strict=True)):
        code = (reason or "").split(";")[0].strip()
        error = code if code in ("bad_encoding", ERASED) else None
        # A line cut off a swallowing quote reads again only with quotes as data: quoted, the
        # csv module would close the quote at the line's end and drop it silently.
        quoted = sources_csv.quote_char(cfg, detected.get("quoting")) is not None
        if code in _REPARSE and not (code == "unbalanced_quote" and quoted):
            fields = _parse_record(raw or "", names, detected, cfg)
            if fields is None:
                error = code
            else:
                for n, v in zip(names, fields, strict=True):
                    columns[n][i] = v
        errors.append(error)
    n = len(quarantined)
    table = pa.table({SOURCE_ROW: quarantined[SOURCE_ROW],
                      **{k: pa.array(v, pa.string()) for k, v in columns.items()},
                      SOURCE_LINE: quarantined[SOURCE_LINE] if SOURCE_LINE in
                      quarantined.column_names else pa.nulls(n, pa.int64()),
                      INGEST_ERROR: pa.array(errors, pa.string()),
                      RAW: pa.array(raws, pa.string())})
    provenance = {k: v for k, v in (quarantined.schema.metadata or {}).items() if k == b"privgen"}
    return clean_chunk(table, names, cfg).replace_schema_metadata(provenance)


def _no_rows(cfg: IngestConfig) -> InputError:
    where = "ingest.sql" if cfg.sql is not None else str(cfg.path)
    return InputError(f"{where}: has no data rows (a header at most); nothing to train on: "
                      "check the export")


def read_source(path: Path, cfg: IngestConfig) -> pd.DataFrame:
    """The whole source in memory (small inputs and tests): strings, numbered from 1."""
    names, chunks, _ = records(cfg.model_copy(update={"path": Path(path)}))
    tables = list(chunks)
    if not tables or sum(t.num_rows for t in tables) == 0:
        raise _no_rows(cfg.model_copy(update={"path": Path(path)}))
    df = pa.concat_tables(tables).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    df[SOURCE_ROW] = df[SOURCE_ROW].astype("int64")
    for name in names:
        df[name] = df[name].astype("string")
    return df


def _stat_key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


# The reason code of a row whose subject asked to be erased.
ERASED = "erased"


def suppress(table: pa.Table, mask: np.ndarray, names: list[str]) -> pa.Table:
    """The rows under ``mask`` marked ``erased`` with every value blanked: the quarantine
    counts them but keeps no copy of an erased person's data."""
    keep = pa.array(~mask)
    for name in [*names, RAW]:
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, pc.if_else(keep, table[name],
                                                     pa.nulls(len(table), table[name].type)))
    errors = pc.if_else(keep, table[INGEST_ERROR], pa.scalar(ERASED, pa.string()))
    return table.set_column(table.schema.get_field_index(INGEST_ERROR), INGEST_ERROR, errors)


def ingest(cfg: IngestConfig, out_dir: Path,
           erased: Callable[[pa.Table], np.ndarray] | None = None) -> IngestResult:
    """Stream the source into ``out_dir/canonical.parquet``; raise InputError on a bad batch.
    ``erased`` gives per chunk the rows to suppress (``tasks.erasure.suppressor``)."""
    path = Path(cfg.path)
    before = _stat_key(path) if cfg.sql is None and path.is_file() else None
    names, chunks, detected = records(cfg)
    counts = {"rows": 0, "unreadable": 0, "erased": 0}
    content = hashlib.sha256()

    def write(tmp: Path) -> None:
        writer = None
        try:
            for table in chunks:
                if cfg.sql is not None:  # the source's digest, before any suppression
                    content.update(pd.util.hash_pandas_object(
                        table.drop_columns(list(META)).to_pandas(), index=False).values.tobytes())
                counts["unreadable"] += table.num_rows - table[INGEST_ERROR].null_count
                if erased is not None:
                    mask = erased(table) & pc.is_null(table[INGEST_ERROR]).to_numpy(
                        zero_copy_only=False)
                    table = suppress(table, mask, names)
                    counts["erased"] += int(mask.sum())
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
                writer.write_table(table)
                counts["rows"] += table.num_rows
        finally:
            if writer is not None:
                writer.close()
        if counts["rows"] == 0:
            raise _no_rows(cfg)

    canonical = atomic_write(Path(out_dir) / "canonical.parquet", write)
    if cfg.sql is not None:
        source, digest = detected.get("source", "sql"), content.hexdigest()
    else:
        source, digest = str(path.resolve()), file_digest(path)
        if before != _stat_key(path):  # the copy and the digest may be of different bytes
            canonical.unlink(missing_ok=True)
            raise InputError(f"{path}: changed while it was being read (still being written?); "
                             "wait until the writer has finished, then run again")
    return IngestResult(canonical_path=str(canonical), source=source, source_digest=digest,
                        rows=counts["rows"], columns=names,
                        rows_unreadable=counts["unreadable"], detected=detected,
                        rows_erased=counts["erased"])


def report_markdown(result: IngestResult) -> str:
    return (
        "# Ingest\n\n"
        f"- source: `{result.source}`\n- sha256: `{result.source_digest}`\n"
        f"- rows: {result.rows} ({result.rows_unreadable} unreadable, {result.rows_erased} "
        "erased on request: passed to quarantine)\n"
        f"- columns: {', '.join(result.columns)}\n"
        f"- read as: {', '.join(f'{k}={v!r}' for k, v in sorted(result.detected.items()))}\n"
    )


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(cfg: IngestConfig, out_dir: str, run_id: str,
                erased: Callable[[pa.Table], np.ndarray] | None = None) -> IngestResult:
    result = ingest(cfg, Path(out_dir), erased)
    schema = pq.read_schema(result.canonical_path).empty_table().to_pandas()
    name = (cfg.sql.table or "query") if cfg.sql is not None else Path(result.source).name
    tracking.log_dataset(
        run_id, schema.drop(columns=list(META)), name=name,
        source=result.source, digest=result.source_digest, context="source", rows=result.rows,
        tags={"rows_unreadable": result.rows_unreadable, "rows_erased": result.rows_erased},
    )
    tracking.log_params(run_id, {"ingest.source_sha256": result.source_digest,
                                 "ingest.rows": result.rows})
    tracking.log_metrics(run_id, {"ingest.rows_erased": result.rows_erased})
    create_markdown_artifact(markdown=report_markdown(result), key="ingest-report")
    get_run_logger().info("ingested %d rows, %d columns (%d unreadable, %d erased on request)",
                          result.rows, len(result.columns), result.rows_unreadable,
                          result.rows_erased)
    return result
