"""Source readers: CSV/TSV, JSONL and Parquet files (SQL in tasks/sources_sql.py), streamed as
chunks of string columns.

Every reader yields Arrow tables holding the data columns as strings plus, per record, the
physical line it starts on (files with lines) and, for a record that cannot be split into the
header's columns, a reason code and its raw text, so that ingest passes it on to quarantine
instead of failing the whole batch.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import io
import json
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tasks.errors import InputError
from tasks.sniff import (
    GZIP_MAGIC,
    binary_kind,
    lines_stand_alone,
    quotes_are_data,
    sep_directive,
    sniff_delimiter,
    split_line,
)

if TYPE_CHECKING:
    from tasks.ingest import IngestConfig

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


def _text_sample(path: Path, cfg: IngestConfig) -> tuple[str, str]:
    """Up to SAMPLE_BYTES of the file decoded, cut at the last full line, and the codec used.

    Raises InputError, naming what was detected and echoing nothing, when the bytes are not
    text (a workbook, an archive, random bytes named ``.csv``)."""
    head = head_bytes(path, cfg)
    if not head:
        raise InputError(f"{path}: is empty (0 bytes); point ingest.path at the exported file")
    kind = binary_kind(head)
    if kind is not None:
        raise not_text(path, kind)
    codec = _decoder_encoding(head, cfg.encoding)
    try:
        text = head.decode(codec, errors="replace")
    except LookupError as exc:
        raise InputError(f"ingest.encoding={cfg.encoding!r} is not a known encoding; use "
                         "e.g. utf-8, cp1252, latin-1 or auto") from exc
    if len(head) == SAMPLE_BYTES and "\n" in text:
        text = text[: text.rindex("\n") + 1]
    return text, codec


def _wrong_delimiter(path: Path, header: list[str], delimiter: str, quote: str | None,
                     sample: str) -> None:
    if len(header) != 1:
        return
    other = sniff_delimiter(sample, delimiter, quote)
    if other != delimiter:
        raise InputError(
            f"{path}: line 1 reads as a single column with delimiter {delimiter!r}, but "
            f"{other!r} splits it into {len(split_line(header[0], other, quote))} columns; set "
            f"ingest.delimiter={other!r} (or leave it unset to detect it)"
        )


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


# --- CSV -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CsvDialect:
    delimiter: str
    quotechar: str | None  # None: quotes are data, every line break ends a record
    escapechar: str | None
    skipinitialspace: bool
    header: bool
    encoding: str  # the Python codec, after BOM and "auto" resolution
    directive: bool = False  # the file starts with Excel's "sep=;" line, which is no record

    def reader_kwargs(self) -> dict[str, Any]:
        return {"delimiter": self.delimiter, "quotechar": self.quotechar or '"',
                "quoting": csv.QUOTE_MINIMAL if self.quotechar else csv.QUOTE_NONE,
                "escapechar": self.escapechar, "skipinitialspace": self.skipinitialspace}


def quote_char(cfg: IngestConfig, detected: str | None = None) -> str | None:
    """The quote character in force: none when ingest.quoting or ingest.quotechar turns quoting
    off, or when ``auto`` found quotes used as data (``detected == "none"``)."""
    if cfg.quotechar is None or cfg.quoting == "none":
        return None
    if cfg.quoting == "auto" and detected == "none":
        return None
    return cfg.quotechar


def _quote_sample(path: Path, cfg: IngestConfig, sample: str,
                  codec: str) -> tuple[str, bool]:
    """A longer sample for telling quoting apart (a message holding one quote may come late),
    and whether it is the whole file."""
    _, reader = open_bytes(path, cfg)
    with reader:
        head = reader.read(QUOTE_SAMPLE_BYTES)
    if len(head) < SAMPLE_BYTES:
        return sample, True
    text = head.decode(codec, errors="replace")
    complete = len(head) < QUOTE_SAMPLE_BYTES
    if not complete and "\n" in text:
        text = text[: text.rindex("\n") + 1]
    declared = sep_directive(text)
    return (text.split("\n", 1)[1] if declared is not None else text), complete


def csv_dialect(path: Path, cfg: IngestConfig, fmt: str) -> tuple[CsvDialect, str]:
    """The dialect from the config where set, detected from a sample where not; the sample
    returned starts after an Excel ``sep=`` line (which sets the delimiter unless
    ingest.delimiter does)."""
    sample, codec = _text_sample(path, cfg)
    declared = sep_directive(sample)
    if declared is not None:
        sample = sample.split("\n", 1)[1] if "\n" in sample else ""
    default = "\t" if fmt == "tsv" else ","
    delimiter = cfg.delimiter or declared or sniff_delimiter(sample, default, cfg.quotechar)
    quote = quote_char(cfg)
    if quote and cfg.quoting == "auto":
        longer, complete = _quote_sample(path, cfg, sample, codec)
        if quotes_are_data(longer, delimiter, quote, complete):
            quote = None
    skip = cfg.skipinitialspace
    if skip is None:
        # "a, b, c" exports (the UCI Adult data, say) put a space after every delimiter.
        fields = [f for line in sample.splitlines()[:50]
                  for f in split_line(line, delimiter, quote)[1:]]
        skip = bool(fields) and sum(f.startswith(" ") for f in fields) / len(fields) > 0.9
    dialect = CsvDialect(delimiter, quote, cfg.escapechar, skip, cfg.header, codec,
                         declared is not None)
    return dialect, sample


def read_csv(path: Path, cfg: IngestConfig, fmt: str) -> Opened:
    dialect, sample = csv_dialect(path, cfg, fmt)
    reader = csv.reader(io.StringIO(sample, newline=""), **dialect.reader_kwargs())
    first_line = 2 if dialect.directive else 1
    try:
        first = next(reader, None)
        header_lines = reader.line_num
    except csv.Error as exc:
        raise InputError(f"{path}: line {first_line} is not valid CSV ({exc}); check "
                         "ingest.quotechar and ingest.delimiter") from exc
    if not first:
        raise InputError(f"{path}: line {first_line} is blank; the first line must be the "
                         "header")
    if dialect.header:
        _wrong_delimiter(path, first, dialect.delimiter, dialect.quotechar, sample)
        names = clean_names(path, first)
    else:
        # Without a header the usual record width names the columns: a first line of
        # metadata ("150,4,setosa,versicolor,virginica" in scikit-learn's CSVs) must not.
        widths = Counter(len(row) for row in islice(
            csv.reader(io.StringIO(sample, newline=""), **dialect.reader_kwargs()), 200) if row)
        width = widths.most_common(1)[0][0] if widths else len(first)
        names, header_lines = [f"column_{i}" for i in range(1, width + 1)], 0
    header_lines += int(dialect.directive)
    detected = {"format": fmt, "delimiter": dialect.delimiter, "encoding": dialect.encoding,
                "skipinitialspace": dialect.skipinitialspace,
                "quoting": "fields" if dialect.quotechar else "none"}
    if dialect.directive:
        detected["sep_line"] = True
    return Opened(names, _csv_chunks(path, cfg, dialect, names, header_lines), detected)


def _csv_chunks(path: Path, cfg: IngestConfig, dialect: CsvDialect, names: list[str],
                header_lines: int) -> Iterator[pa.Table]:
    """Arrow's fast reader when the file allows it, else the exact line-by-line reader.

    Arrow cannot say on which line a record starts once anything is odd (a ragged row, a
    blank line, an unclosed quote, bytes that are not UTF-8), so any oddity hands over to
    Python's csv module, which numbers every line; it skips the records already passed on.
    Both split records the same way (tests/unit/test_ingest.py holds them to it).
    """
    done = 0
    if not dialect.skipinitialspace and dialect.encoding == "utf-8-sig":
        try:
            for table in _fast_csv(path, cfg, dialect, names, header_lines):
                yield table
                done += table.num_rows
            return
        except _NeedsExact:
            pass
    for table in _exact_csv(path, cfg, dialect, names, header_lines):
        if done >= table.num_rows:
            done -= table.num_rows
            continue
        yield table.slice(done)
        done = 0


class _NeedsExact(Exception):
    """The fast reader met something only the exact reader can number."""


def _fast_csv(path: Path, cfg: IngestConfig, dialect: CsvDialect, names: list[str],
              header_lines: int) -> Iterator[pa.Table]:
    tap, reader = open_bytes(path, cfg, dialect.quotechar)
    options = {
        "read_options": pacsv.ReadOptions(column_names=names, skip_rows=header_lines,
                                          block_size=BLOCK_BYTES),
        "parse_options": pacsv.ParseOptions(
            delimiter=dialect.delimiter, quote_char=dialect.quotechar or False,
            escape_char=dialect.escapechar or False, newlines_in_values=True),
        "convert_options": pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()), null_values=[],
            strings_can_be_null=False),
    }
    with reader:
        try:
            pending = None
            line = header_lines + 1
            for batch in pacsv.open_csv(reader, **options):
                # The tap reads ahead of the parser, so a blank line or a bad byte is seen
                # before the batch holding it is passed on: what was yielded stays right.
                if tap.blank_line:
                    raise _NeedsExact
                if pending is not None:
                    yield pending
                pending, line = _number_lines(pa.Table.from_batches([batch]), line)
                if dialect.quotechar and _swallowed(pending, names, dialect.delimiter):
                    raise _NeedsExact
            if tap.blank_line or (dialect.quotechar and tap.quotes % 2):
                raise _NeedsExact
            if pending is not None:
                yield pending
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise _NeedsExact from exc


def _swallowed(table: pa.Table, names: list[str], delimiter: str) -> bool:
    """Whether a value runs over a line break into text holding the delimiter: the mark of a
    quote that opened a field and swallowed whole records (a message holding one ``"``).
    The exact reader then decides line by line (tasks.sniff.lines_stand_alone)."""
    char = "\\" + delimiter if delimiter in "]\\^-" else delimiter
    pattern = "\n[^\n]*[" + char + "]"
    return any(pc.any(pc.match_substring_regex(table[n], pattern)).as_py() for n in names)


def _number_lines(table: pa.Table, first_line: int) -> tuple[pa.Table, int]:
    """Add the line each record starts on: one line per record plus its embedded newlines."""
    n = table.num_rows
    newlines = np.zeros(n, dtype=np.int64)
    for col in table.columns:
        # Scanning the value bytes at once is ~50x cheaper than per-value counting, and most
        # files have no newline inside any value.
        if any(c.buffers()[2] is not None and (np.frombuffer(c.buffers()[2], np.uint8) == 10)
               .any() for c in col.chunks):
            newlines += pc.count_substring(col, "\n").to_numpy(zero_copy_only=False)
    before = np.concatenate(([0], np.cumsum(newlines)[:-1])) if n else newlines
    lines = first_line + np.arange(n, dtype=np.int64) + before
    return _with_meta(table, pa.array(lines)), first_line + n + int(newlines.sum())


def _with_meta(table: pa.Table, lines: pa.Array | None, errors: list | None = None,
               raws: list | None = None) -> pa.Table:
    n = table.num_rows
    table = table.append_column(SOURCE_LINE, lines if lines is not None
                                else pa.nulls(n, pa.int64()))
    table = table.append_column(INGEST_ERROR, pa.array(errors, pa.string()) if errors
                                else pa.nulls(n, pa.string()))
    return table.append_column(RAW, pa.array(raws, pa.string()) if raws
                               else pa.nulls(n, pa.string()))


class _Lines:
    """The text lines the csv module pulls, kept until the record they form is taken."""

    def __init__(self, text: io.TextIOBase) -> None:
        self._it = iter(text)
        self.buf: list[str] = []
        self.bad_bytes = False

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = next(self._it)
        self.buf.append(line)
        if not self.bad_bytes and not line.isascii():
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:  # a byte the codec could not decode (surrogateescape)
                self.bad_bytes = True
        return line

    def take(self) -> tuple[list[str], bool]:
        buf, bad = self.buf, self.bad_bytes
        self.buf, self.bad_bytes = [], False
        return buf, bad


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


def _exact_csv(path: Path, cfg: IngestConfig, dialect: CsvDialect, names: list[str],
               header_lines: int) -> Iterator[pa.Table]:
    # The csv module's per-field cap is global; the decompressed-size cap bounds memory
    # instead, and ingest quarantines fields over ingest.max_field_bytes.
    csv.field_size_limit(max(csv.field_size_limit(), min(cfg.max_bytes, 2**62)))
    _, reader = open_bytes(path, cfg)
    with reader:
        text = io.TextIOWrapper(reader, encoding=dialect.encoding, errors="surrogateescape",
                                newline="")
        lines = _Lines(text)
        records = csv.reader(lines, **dialect.reader_kwargs())
        for _ in range(header_lines):
            next(lines, None)
        lines.take()
        n, end, rows, last = len(names), header_lines, _Rows(names), (0, [""], False)
        while True:
            try:
                fields = next(records)
                error = None
            except StopIteration:
                break
            except csv.Error:
                fields, error = [], "bad_csv"
            start, end = end + 1, header_lines + records.line_num
            buf, bad_bytes = lines.take()
            split = (dialect.quotechar is not None and not bad_bytes
                     and lines_stand_alone(buf, dialect.delimiter, n))
            last = (start, buf, split)
            if not fields and error is None:
                continue  # a blank line is no record
            if split:
                # Each line reads as a whole record once the quote is taken as data: which
                # reading is right cannot be told, so every line goes to quarantine, counted.
                for i, raw in enumerate(buf):
                    rows.add(start + i, [None] * n, "unbalanced_quote", raw)
            elif bad_bytes:
                rows.add(start, [_printable(f) for f in fields] if len(fields) == n
                         else [None] * n, "bad_encoding", _printable("".join(buf)))
            elif error or len(fields) != n:
                rows.add(start, [None] * n, error or "ragged_row", "".join(buf))
            else:
                rows.add(start, fields)
            if len(rows) >= cfg.chunk_rows:
                yield rows.table()
                rows = _Rows(names)
        if dialect.quotechar and not last[2] and _unclosed("".join(last[1]), dialect):
            raise InputError(
                f"{path}: line {last[0]}: a quoted field opens here and never closes, so "
                f"lines {last[0]}-{end} read as one value; close the quote in the source, or "
                "set ingest.quoting: none if the file does not quote fields"
            )
        if len(rows):
            yield rows.table()


def _unclosed(raw: str, dialect: CsvDialect) -> bool:
    try:
        list(csv.reader(io.StringIO(raw, newline=""), strict=True, **dialect.reader_kwargs()))
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def parse_record(raw: str, names: list[str], detected: dict[str, Any],
                 cfg: IngestConfig) -> list[str | None] | None:
    """One raw record split into ``names`` under the current settings, or None if it still
    does not fit (a replay after fixing ingest.delimiter or ingest.quotechar, say)."""
    if detected.get("format") in ("csv", "tsv"):
        skip = cfg.skipinitialspace
        quote = quote_char(cfg, detected.get("quoting"))
        dialect = CsvDialect(cfg.delimiter or detected.get("delimiter", ","), quote,
                             cfg.escapechar, bool(detected.get("skipinitialspace") if skip is None
                                                  else skip), True, "utf-8")
        try:
            rows = [r for r in csv.reader(io.StringIO(raw, newline=""),
                                          **dialect.reader_kwargs()) if r]
        except csv.Error:
            return None
        return list(rows[0]) if len(rows) == 1 and len(rows[0]) == len(names) else None
    if detected.get("format") == "jsonl":
        try:
            obj = json.loads(raw)
        except ValueError:
            return None
        keys = detected.get("keys", names)
        return [_json_value(obj.get(k)) for k in keys] if isinstance(obj, dict) else None
    return None


# --- JSONL ---------------------------------------------------------------------------------

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
