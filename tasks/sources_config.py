"""The ingest stage's config: which source to read and how (file dialect, encoding, limits, or a
SQL table or query). Beside the readers that consume it (``tasks.sources*``); ``tasks.ingest``
composes them and re-exports it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class SqlSource(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # SQLAlchemy URL, e.g. postgresql+psycopg2://user:pass@host/db. Secret: it may hold a
    # password, and the pipeline config is logged to MLflow.
    url: SecretStr
    # Either a table (or view), read whole in primary-key order...
    table: str | None = None
    db_schema: str | None = None
    columns: tuple[str, ...] | None = None
    # ...or one read-only SELECT whose values come in through :name bind parameters.
    query: str | None = None
    params: dict[str, str | int | float | bool | None] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _table_or_query(self) -> SqlSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("set exactly one of table and query")
        if self.query is None and self.params:
            raise ValueError("params only apply to a query")
        return self


class IngestConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # The shipped demo data, so `privgen run` works with no config at all.
    path: Path = Path("data/demo/tickets.csv")
    # "auto" picks the reader from the file extension (.csv, .tsv, .jsonl, .parquet, .gz), or
    # from the content when the extension says nothing (.data, .dat, none).
    format: Literal["auto", "csv", "tsv", "parquet", "jsonl"] = "auto"
    # A database instead of a file: set this and path is not read.
    sql: SqlSource | None = None
    # "auto": UTF-8 unless the first 64 KiB are not, then cp1252. A byte-order mark always wins.
    encoding: str = "utf-8"
    # Cells exactly equal to one of these markers are missing values.
    missing_values: tuple[str, ...] = ("", "NA", "N/A", "null", "NULL", "None", "nan")
    # CSV dialect; null means detected from the first 64 KiB.
    delimiter: str | None = Field(default=None, min_length=1, max_length=1)
    quotechar: str | None = Field(default='"', min_length=1, max_length=1)
    # "fields": quotechar quotes fields (RFC 4180); "none": quotes are data and every line
    # break ends a record (tab-separated message exports, review sentences); "auto": fields,
    # unless the first MiB reads better with quotes as data (a quote opening a field that
    # never closes there). A record that swallowed lines which each read as a record is
    # quarantined line by line as unbalanced_quote, so rows in always count the lines.
    quoting: Literal["auto", "fields", "none"] = "auto"
    escapechar: str | None = Field(default=None, min_length=1, max_length=1)
    skipinitialspace: bool | None = None
    header: bool = True
    # Only files under this folder may be read (symlinks resolved). Null: any path the process
    # can read, since the path comes from the operator's own config; set it wherever paths come
    # from less trusted hands (deployment parameters, a shared service).
    allowed_root: Path | None = None
    # Bytes read after decompression: past this the file is refused (gzip bombs, runaway exports).
    max_bytes: int = Field(default=10 * 2**30, gt=0)
    # A longer cell quarantines its record: no field of a record is worth megabytes of training.
    max_field_bytes: int = Field(default=2**20, gt=0)
    # Records per chunk: bounds memory whatever the file size.
    chunk_rows: int = Field(default=200_000, gt=0)
