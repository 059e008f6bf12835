"""Source readers: what every reader shares (byte stream, size cap, record tables with line
numbers and reasons), JSONL and Parquet; CSV/TSV in tasks/sources_csv.py, SQL in
tasks/sources_sql.py. All stream chunks of string columns.

Every reader yields Arrow tables holding the data columns as strings plus, per record, the
physical line it starts on (files with lines) and, for a record that cannot be split into the
header's columns, a reason code and its raw text, so that ingest passes it on to quarantine
instead of failing the whole batch.
"""

from __future__ import annotations

import difflib
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.errors import InputError
from tasks.sniff import (
    GZIP_MAGIC,
)
from tasks.sources_config import IngestConfig

SOURCE_ROW = "_source_row"  # 1-based record number in the source, kept for quarantine reports
SOURCE_LINE = "_source_line"  # 1-based physical line the record starts on; null without lines
INGEST_ERROR = "_ingest_error"  # reason code when the record could not be read into columns
RAW = "_raw"  # that record's raw text, so a replay can parse it again after a fix
META = (SOURCE_ROW, SOURCE_LINE, INGEST_ERROR, RAW)
REASON = "_reason"  # in quarantine: why each row is there, "kind:column" codes joined by "; "

SAMPLE_BYTES = 1 << 16
QUOTE_SAMPLE_BYTES = 1 << 20  # ~0.1 s of the csv module, twice
# Rows longer than an Arrow block fail the fast reader; the exact reader then takes over.
BLOCK_BYTES = 1 << 22


@dataclass
class Opened:
    """A source ready to stream: its column names, its chunks, and what was detected."""

    columns: list[str]
    chunks: Iterator[pa.Table]
    detected: dict[str, Any] = field(default_factory=dict)


class _Tap(io.RawIOBase):
    """A byte stream that enforces ``ingest.max_bytes`` after decompression and notes what the
    fast CSV reader cannot handle: an odd number of quote characters or blank lines."""

    def __init__(self, raw: Any, path: Path, cap: int, quote: bytes | None) -> None:
        self._raw, self._path, self._cap, self._quote = raw, path, cap, quote
        self.read_bytes = 0
        self.quotes = 0
        self.blank_line = False
        self._tail = b"\n"  # a file that starts with a newline starts with a blank line

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)
        if not n:
            return 0
        self.read_bytes += n
        if self.read_bytes > self._cap:
            raise InputError(
                f"{self._path}: holds more than ingest.max_bytes={self._cap} bytes once "
                "decompressed (a gzip bomb, or a larger export than expected); raise "
                "ingest.max_bytes if the file is genuine"
            )
        data = bytes(buffer[:n])
        if self._quote:
            self.quotes += data.count(self._quote)
        window = self._tail + data
        if b"\n\n" in window or b"\n\r\n" in window or b"\r\r" in window:
            self.blank_line = True
        self._tail = window[-2:]
        return n


def open_bytes(path: Path, cfg: IngestConfig, quote: str | None = None) -> tuple[_Tap, Any]:
    """The file's (decompressed) bytes behind a tap; returns (tap, buffered reader).

    gzip is told by its magic number, not the name: a ``.gz`` that is not compressed reads as
    it is, and a compressed file without the suffix is still decompressed."""
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller through the returned reader
    magic = raw.read(2)
    raw.seek(0)
    if magic == GZIP_MAGIC:
        raw = gzip.GzipFile(fileobj=raw, mode="rb")
    tap = _Tap(raw, path, cfg.max_bytes, quote.encode() if quote else None)
    return tap, io.BufferedReader(tap, buffer_size=1 << 20)


def head_bytes(path: Path, cfg: IngestConfig) -> bytes:
    """Up to SAMPLE_BYTES of the file, decompressed; a damaged gzip stream is a clear error."""
    _, reader = open_bytes(path, cfg)
    try:
        with reader:
            return reader.read(SAMPLE_BYTES)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise InputError(f"{path}: starts like a gzip file but cannot be decompressed "
                         f"({type(exc).__name__}); export it again") from None


def not_text(path: Path, kind: str) -> InputError:
    # Only the kind is named: the bytes themselves may be anything, personal data included.
    return InputError(f"{path}: is not text but {kind}; export the data as CSV, TSV, JSON "
                      "Lines or Parquet (or set ingest.format to what the file is)")


def _decoder_encoding(head: bytes, encoding: str) -> str:
    """Pick the codec: a byte-order mark wins (Excel writes one), else the configured one."""
    if head.startswith(b"\xff\xfe") or head.startswith(b"\xfe\xff"):
        return "utf-16"
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        return "utf-8-sig"  # reads a UTF-8 BOM as what it is, not as part of the first name
    if encoding == "auto":
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            # A multibyte character cut off by the end of the sample is still UTF-8.
            if not (len(head) == SAMPLE_BYTES and exc.reason == "unexpected end of data"):
                return "cp1252"
        return "utf-8-sig"
    return encoding


def clean_names(path: Path, names: list[str]) -> list[str]:
    """Header names stripped of blanks; empty ones numbered; repeats and reserved ones refused."""
    out = [n.strip() or f"column_{i}" for i, n in enumerate(names, start=1)]
    seen: dict[str, int] = {}
    for i, n in enumerate(out, start=1):
        if n in (*META, REASON):
            raise InputError(f"{path}: column {i} is named {n!r}, a name privgen reserves for "
                             "row numbers; rename it in the source")
        if n in seen:
            raise InputError(f"{path}: the header names {n!r} twice (columns {seen[n]} and "
                             f"{i}); rename one of them in the source")
        seen[n] = i
    return out


def _with_meta(table: pa.Table, lines: pa.Array | None, errors: list | None = None,
               raws: list | None = None) -> pa.Table:
    n = table.num_rows
    table = table.append_column(SOURCE_LINE, lines if lines is not None
                                else pa.nulls(n, pa.int64()))
    table = table.append_column(INGEST_ERROR, pa.array(errors, pa.string()) if errors
                                else pa.nulls(n, pa.string()))
    return table.append_column(RAW, pa.array(raws, pa.string()) if raws
                               else pa.nulls(n, pa.string()))


def _printable(text: str) -> str:
    """Undecodable bytes as ``\\xNN`` escapes, so the text can be stored as UTF-8."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class _Rows:
    """Records gathered into one Arrow table: good ones by column, bad ones as raw text."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.rows: list[list[str | None]] = []
        self.lines: list[int | None] = []
        self.errors: list[str | None] = []
        self.raws: list[str | None] = []

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, line: int | None, values: list[str | None], error: str | None = None,
            raw: str | None = None) -> None:
        self.rows.append(values)
        self.lines.append(line)
        self.errors.append(error)
        self.raws.append(raw)

    def table(self) -> pa.Table:
        cols = list(zip(*self.rows, strict=True)) if self.rows else [()] * len(self.names)
        table = pa.table({n: pa.array(c, pa.string()) for n, c in zip(self.names, cols,
                                                                     strict=True)})
        bad = any(e is not None for e in self.errors)
        return _with_meta(table, pa.array(self.lines, pa.int64()),
                          self.errors if bad else None, self.raws if bad else None)


# --- JSONL ---------------------------------------------------------------------------------

def parse_json_line(raw: str, names: list[str],
                    detected: dict[str, Any]) -> list[str | None] | None:
    """One raw JSON line as the values of ``names`` (the keys detected), or None if it is
    still no JSON object."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    keys = detected.get("keys", names)
    return [_json_value(obj.get(k)) for k in keys] if isinstance(obj, dict) else None


def _json_value(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v, ensure_ascii=False, sort_keys=True)


def read_jsonl(path: Path, cfg: IngestConfig) -> Opened:
    """JSON Lines: one object per line; the columns are every key seen, in order of first use.

    A first pass collects the keys, so an optional key that only shows up late is a column,
    not a surprise; lines that are not JSON objects are numbered and passed to quarantine.
    """
    keys: dict[str, None] = {}
    _, reader = open_bytes(path, cfg)
    with reader:
        for raw in reader:
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict):
                keys.update(dict.fromkeys(obj))
    if not keys:
        size = path.stat().st_size
        raise InputError(f"{path}: " + ("is empty (0 bytes)" if size == 0 else
                         "holds no JSON object on any line") +
                         "; expected one JSON object per line")
    names = clean_names(path, list(keys))
    return Opened(names, _jsonl_chunks(path, cfg, list(keys), names),
                  {"format": "jsonl", "keys": list(keys)})


def _jsonl_chunks(path: Path, cfg: IngestConfig, keys: list[str],
                  names: list[str]) -> Iterator[pa.Table]:
    codec = _decoder_encoding(b"", cfg.encoding)
    _, reader = open_bytes(path, cfg)
    rows = _Rows(names)
    with reader:
        for number, raw in enumerate(reader, start=1):
            try:
                line = raw.decode(codec)
            except UnicodeDecodeError:
                rows.add(number, [None] * len(keys), "bad_encoding",
                         raw.decode("utf-8", "backslashreplace"))
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                rows.add(number, [None] * len(keys), "bad_json", line)
                continue
            if not isinstance(obj, dict):
                rows.add(number, [None] * len(keys), "not_an_object", line)
            else:
                rows.add(number, [_json_value(obj.get(k)) for k in keys])
            if len(rows) >= cfg.chunk_rows:
                yield rows.table()
                rows = _Rows(names)
    if len(rows):
        yield rows.table()


# --- Parquet -------------------------------------------------------------------------------

def _as_strings(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if pa.types.is_string(col.type):
        return col
    try:
        return pc.cast(col, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        # Nested values (lists, structs, maps) and raw bytes: JSON text, as in JSONL.
        values = col.to_pylist()
        if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            return pa.chunked_array([[None if v is None else
                                      v.decode("utf-8", "backslashreplace") for v in values]],
                                    pa.string())
        return pa.chunked_array([[_json_value(v) for v in values]], pa.string())


def read_parquet(path: Path, cfg: IngestConfig) -> Opened:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: is not a readable Parquet file ({_first_line(exc)}); it may "
                         "be truncated or still being written: export it again") from exc
    names = clean_names(path, pf.schema_arrow.names)
    if pf.metadata.num_rows == 0:
        raise InputError(f"{path}: has a schema but no data rows; nothing to train on")

    def chunks() -> Iterator[pa.Table]:
        try:
            for batch in pf.iter_batches(batch_size=cfg.chunk_rows):
                table = pa.Table.from_batches([batch])
                table = pa.table([_as_strings(c) for c in table.columns], names=names)
                yield _with_meta(table, None)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{path}: a Parquet page cannot be read ({_first_line(exc)}); the "
                             "file is damaged: export it again") from exc

    return Opened(names, chunks(), {"format": "parquet"})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""
