"""What a file holds, from its first bytes: text or which binary, its format, its CSV dialect.

Pure functions on a sample (bytes or decoded text), so that ingest and ``--infer`` read a file
the same way whatever its name: an Excel ``sep=;`` line, quotes that are data, a ``.data``
extension or random bytes named ``.csv`` are told from the content, never from the name alone.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter

DELIMITERS = (",", ";", "\t", "|")

# Magic numbers of the binary files people export or rename by mistake.
_SIGNATURES = (
    (b"PAR1", "a Parquet file"),
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook, or a zipped export)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an OLE2 document (an old Excel .xls workbook)"),
    (b"SQLite format 3\x00", "an SQLite database (read it through ingest.sql)"),
    (b"%PDF", "a PDF document"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"ARROW1", "an Arrow/Feather file"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
)
GZIP_MAGIC = b"\x1f\x8b"
# Control bytes text never holds; tab, newlines, form feed and escape do occur in exports.
_CONTROL = bytes(b for b in range(32) if b not in (9, 10, 12, 13, 27))
_SEP_LINE = re.compile(r'^\ufeff?"?sep=(.)"?[ \t]*\r?\n', re.IGNORECASE)


def binary_kind(head: bytes) -> str | None:
    """What the bytes are when they are not text, in words that name no content; else None.

    Text in UTF-16 (with its byte-order mark) is text. Otherwise a known signature names the
    kind, and NUL bytes or more than 1 % control bytes mean binary data."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None
    for magic, kind in _SIGNATURES:
        if head.startswith(magic):
            return kind
    if not head:
        return None
    nul = head.count(0)
    control = sum(head.count(bytes([b])) for b in _CONTROL)
    if nul or control / len(head) > 0.01:
        return (f"binary data ({control / len(head):.0%} of the first {len(head)} bytes are "
                "control bytes)")
    return None


def format_from_content(head: bytes) -> str:
    """``parquet``, ``jsonl`` or ``csv`` (any delimiter) from the first bytes of a file.

    Raises ValueError naming the kind when the bytes are neither (see binary_kind)."""
    if head.startswith(b"PAR1"):
        return "parquet"
    kind = binary_kind(head)
    if kind is not None:
        raise ValueError(kind)
    text = head.decode("utf-8", errors="replace")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if first.startswith("{"):
        try:
            if isinstance(json.loads(first), dict):
                return "jsonl"
        except ValueError:
            pass
    return "csv"


def sep_directive(sample: str) -> str | None:
    """The delimiter an Excel ``sep=;`` first line declares, or None if there is none."""
    match = _SEP_LINE.match(sample)
    return match.group(1) if match else None


def split_line(line: str, delimiter: str, quotechar: str | None) -> list[str]:
    """One physical line as fields, quoting on (``quotechar``) or off (None)."""
    return next(csv.reader([line], delimiter=delimiter, quotechar=quotechar or '"',
                           quoting=csv.QUOTE_MINIMAL if quotechar else csv.QUOTE_NONE), [])


def _field_counts(sample: str, delimiter: str, quotechar: str | None) -> list[int]:
    reader = csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter,
                        quotechar=quotechar or '"',
                        quoting=csv.QUOTE_MINIMAL if quotechar else csv.QUOTE_NONE)
    try:
        return [len(r) for _, r in zip(range(200), reader, strict=False) if r]
    except csv.Error:
        return []


def sniff_delimiter(sample: str, default: str, quotechar: str | None) -> str:
    """The delimiter that splits the sample into the most consistent number (>1) of fields.

    Counting fields per record beats csv.Sniffer's character-frequency guess, which picks
    letters or spaces on short samples and free text.
    """
    best, best_score = default, (0.0, 0)
    for d in (default, *[c for c in DELIMITERS if c != default]):
        counts = _field_counts(sample, d, quotechar)
        if not counts or counts[0] < 2:
            continue
        score = (sum(c == counts[0] for c in counts) / len(counts), counts[0])
        if score > best_score:
            best, best_score = d, score
    return best


def lines_stand_alone(lines: list[str], delimiter: str, width: int) -> bool:
    """True when a record that spans these physical lines could as well be one record per line:
    each line, read with quoting off, splits into exactly ``width`` fields. A quote that opened
    a field and never closed it on its own line (a message that holds one ``"``) is then
    indistinguishable from a quoted value with line breaks, so the lines are not merged."""
    return len(lines) > 1 and width > 1 and all(
        len(split_line(line.rstrip("\r\n"), delimiter, None)) == width for line in lines)


def _modal(widths: list[int]) -> int:
    return Counter(widths).most_common(1)[0][0] if widths else 0


def quotes_are_data(sample: str, delimiter: str, quotechar: str, complete: bool = False) -> bool:
    """Whether the sample reads better with quoting off: the share of lines that form clean
    records (the usual width, no stray text after a closing quote, no record that swallowed
    lines that stand alone) is higher with quotes as data than with quotes as field quoting.

    A tie keeps quoting on, as RFC 4180 has it. ``sample`` ends at a line break; ``complete``
    says it is the whole file, so that a quote still open at its end is evidence too."""
    if quotechar not in sample:
        return False
    lines = sample.splitlines(keepends=True)
    plain = [len(split_line(line.rstrip("\r\n"), delimiter, None)) for line in lines
             if line.strip("\r\n")]
    width = _modal(plain)
    plain_good = sum(w == width for w in plain)

    records: list[tuple[list[str], list[str] | None]] = []
    taken: list[str] = []

    def feed():
        for line in lines:
            taken.append(line)
            yield line

    reader = csv.reader(feed(), delimiter=delimiter, quotechar=quotechar, strict=True)
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error:
            fields = None
        records.append((list(taken), fields))
        taken.clear()
    if records and records[-1][1] is None and not complete:
        records.pop()  # a quoted value cut off by the end of the sample is no evidence
    quoted_width = _modal([len(f) for _, f in records if f])
    quoted_good = sum(
        sum(1 for line in raw if line.strip("\r\n")) for raw, f in records
        if f is not None and len(f) == quoted_width
        and not lines_stand_alone(raw, delimiter, quoted_width))
    return plain_good > quoted_good
