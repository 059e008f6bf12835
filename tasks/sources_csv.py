"""CSV/TSV sources: the dialect detected from a sample (tasks/sniff.py), then Arrow's fast
reader, handing over to the csv module's exact, line-numbering reader at the first oddity."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from tasks.errors import InputError
from tasks.sniff import (
    binary_kind,
    lines_stand_alone,
    quotes_are_data,
    sep_directive,
    sniff_delimiter,
    split_line,
)
from tasks.sources import (
    BLOCK_BYTES,
    QUOTE_SAMPLE_BYTES,
    SAMPLE_BYTES,
    Opened,
    _decoder_encoding,
    _printable,
    _Rows,
    _with_meta,
    clean_names,
    head_bytes,
    not_text,
    open_bytes,
)
from tasks.sources_config import IngestConfig


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




def parse_line(raw: str, names: list[str], detected: dict[str, Any],
               cfg: IngestConfig) -> list[str | None] | None:
    """One raw record split into ``names`` under the current settings, or None if it still
    does not fit (a replay after fixing ingest.delimiter or ingest.quoting, say)."""
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
