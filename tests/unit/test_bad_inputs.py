"""Real-world bad inputs through ingest + validate (issue 3).

Each case asserts the error class, that the message names the file, line or column and says
what to do, and, wherever rows get through, that rows in = rows kept + rows quarantined.
"""

import gzip
import json
import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

import tasks.ingest as ingest_module
from tasks.contract import ColumnSpec, DataContract, DType, Role
from tasks.errors import InputError, ValidationFailed
from tasks.ingest import SOURCE_LINE, SOURCE_ROW, IngestConfig, SqlSource, ingest
from tasks.validate import REASON, ValidateConfig, validate_file

CONTRACT = DataContract(columns=(
    ColumnSpec(name="id", role=Role.ID, unique=True, regex=r"^P\d+$"),
    ColumnSpec(name="name", role=Role.DIRECT_IDENTIFIER),
    ColumnSpec(name="age", dtype=DType.INTEGER, role=Role.NUMERIC, min=0, max=120),
    ColumnSpec(name="note", role=Role.TEXT, nullable=True),
))
HEADER = "id,name,age,note"


def _lines(n, start=1):
    return [f"P{i},Person {i},{20 + i % 50},note {i}" for i in range(start, start + n)]


def _write(path, lines, header=HEADER):
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def _run(path, contract=CONTRACT, **ingest_kw):
    validate_kw = ingest_kw.pop("validate", {})
    return validate_file(path, contract, IngestConfig(**ingest_kw), ValidateConfig(**validate_kw),
                         path.parent / "out")


def _frames(outcome, rows_in):
    """Kept and quarantined rows, after checking that every source row is in exactly one."""
    kept = pd.read_parquet(outcome.kept_path)
    quarantined = pd.read_parquet(outcome.quarantine_path)
    assert outcome.report.rows_in == rows_in == len(kept) + len(quarantined)
    assert set(kept[SOURCE_ROW]).isdisjoint(quarantined[SOURCE_ROW])
    assert sorted([*kept[SOURCE_ROW], *quarantined[SOURCE_ROW]]) == list(range(1, rows_in + 1))
    return kept, quarantined


def _reason_at(quarantined, line):
    return quarantined.loc[quarantined[SOURCE_LINE] == line, REASON].iloc[0]


def _reason_at_row(quarantined, row):
    return quarantined.loc[quarantined[SOURCE_ROW] == row, REASON].iloc[0]


# --- files that cannot be read at all ------------------------------------------------------

def test_empty_file(tmp_path):
    path = tmp_path / "people.csv"
    path.write_bytes(b"")
    with pytest.raises(InputError, match=r"people\.csv: is empty \(0 bytes\); point ingest\.path"):
        _run(path)


def test_header_only(tmp_path):
    path = _write(tmp_path / "people.csv", [])
    with pytest.raises(InputError, match=r"people\.csv: has no data rows \(a header at most\)"):
        _run(path)


def test_truncated_parquet(tmp_path):
    whole = tmp_path / "whole.parquet"
    pd.DataFrame({"id": ["P1", "P2"], "name": ["a", "b"]}).to_parquet(whole)
    path = tmp_path / "people.parquet"
    path.write_bytes(whole.read_bytes()[:-20])
    with pytest.raises(InputError, match=r"people\.parquet: is not a readable Parquet file .*"
                                         r"truncated or still being written: export it again"):
        _run(path)


def test_parquet_without_rows(tmp_path):
    path = tmp_path / "people.parquet"
    pd.DataFrame({"id": pd.Series([], dtype=str)}).to_parquet(path)
    with pytest.raises(InputError, match=r"people\.parquet: has a schema but no data rows"):
        _run(path)


def test_directory_instead_of_file(tmp_path):
    (tmp_path / "people.csv").mkdir()
    with pytest.raises(InputError, match=r"people\.csv: is a directory; point ingest\.path at a"):
        _run(tmp_path / "people.csv")


def test_named_pipe_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "people.csv")
    with pytest.raises(InputError, match=r"people\.csv: is not a regular file"):
        _run(tmp_path / "people.csv")


@pytest.mark.parametrize("uri", ["s3://bucket/people.csv", "http://example.org/people.csv",
                                 "file:///tmp/people.csv"])
def test_unsupported_uri_scheme(tmp_path, uri):
    with pytest.raises(InputError, match=r"sources are not supported; copy the file to local "
                                         r"disk first, or read a database through ingest\.sql"):
        ingest(IngestConfig(path=uri), tmp_path)


def test_unknown_extension(tmp_path):
    path = tmp_path / "people.xlsx"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(InputError, match=r"people\.xlsx: cannot tell the format .*ingest\.format"):
        _run(path)


# --- where files come from -----------------------------------------------------------------

def test_path_traversal_out_of_allowed_root(tmp_path):
    root = tmp_path / "inbox"
    root.mkdir()
    _write(tmp_path / "secret.csv", _lines(3))
    with pytest.raises(InputError, match=r"secret\.csv: resolves to .* outside "
                                         r"ingest\.allowed_root=.*inbox"):
        ingest(IngestConfig(path=root / ".." / "secret.csv", allowed_root=root), tmp_path / "o")


def test_symlink_out_of_allowed_root(tmp_path):
    root = tmp_path / "inbox"
    root.mkdir()
    (root / "people.csv").symlink_to(_write(tmp_path / "secret.csv", _lines(3)))
    with pytest.raises(InputError, match=r"people\.csv: resolves to .*secret\.csv, outside "
                                         r"ingest\.allowed_root"):
        ingest(IngestConfig(path=root / "people.csv", allowed_root=root), tmp_path / "o")
    inside = _write(root / "ok.csv", _lines(3))  # a file under the root is read
    assert ingest(IngestConfig(path=inside, allowed_root=root), tmp_path / "o").rows == 3


@pytest.mark.parametrize("name", ["people.csv.part", "people.csv.tmp", "people.csv.crdownload"])
def test_file_still_being_downloaded(tmp_path, name):
    path = _write(tmp_path / name, _lines(3))
    with pytest.raises(InputError, match=r"marks a file still being written or downloaded; wait"):
        _run(path)


def test_file_that_changes_while_read(tmp_path, monkeypatch):
    path = _write(tmp_path / "people.csv", _lines(50))
    real = ingest_module.records

    def growing(cfg):
        names, chunks, detected = real(cfg)

        def appended():
            with open(path, "a") as f:  # the exporter is still writing
                f.write("P999,Late Row,40,\n")
            yield from chunks

        return names, appended(), detected

    monkeypatch.setattr(ingest_module, "records", growing)
    with pytest.raises(InputError, match=r"people\.csv: changed while it was being read .*wait"):
        _run(path)
    assert not (tmp_path / "out" / "canonical.parquet").exists()


def test_file_over_size_cap(tmp_path):
    path = _write(tmp_path / "people.csv", _lines(200))
    with pytest.raises(InputError, match=r"people\.csv: is \d+ bytes, over ingest\.max_bytes=1000"):
        _run(path, max_bytes=1000)


def test_gzip_bomb(tmp_path):
    path = tmp_path / "people.csv.gz"
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write((HEADER + "\n").encode())
        block = ("\n".join(_lines(1000)) + "\n").encode()
        for _ in range(200):  # ~5 MB unpacked from ~40 KB on disk
            f.write(block)
    assert path.stat().st_size < 1_000_000
    with pytest.raises(InputError, match=r"people\.csv\.gz: holds more than ingest\.max_bytes="
                                         r"1000000 bytes once decompressed \(a gzip bomb"):
        _run(path, max_bytes=1_000_000)


def test_gzip_within_cap_is_read(tmp_path):
    path = tmp_path / "people.csv.gz"
    path.write_bytes(gzip.compress(("\n".join([HEADER, *_lines(30)]) + "\n").encode()))
    kept, _ = _frames(_run(path), 30)
    assert len(kept) == 30


# --- encodings, delimiters, quoting --------------------------------------------------------

def test_byte_order_mark_is_handled(tmp_path):
    path = tmp_path / "people.csv"
    path.write_bytes(b"\xef\xbb\xbf" + ("\n".join([HEADER, *_lines(5)]) + "\n").encode())
    kept, quarantined = _frames(_run(path), 5)
    assert list(kept.columns[:2]) == [SOURCE_ROW, "id"] and quarantined.empty


def test_invalid_utf8_line_is_quarantined_with_its_line(tmp_path):
    path = tmp_path / "people.csv"
    body = "\n".join([HEADER, *_lines(40)]).encode()
    path.write_bytes(body + b"\nP41,Jos\xe9 Bad,33,note\n")
    kept, quarantined = _frames(_run(path), 41)
    assert len(kept) == 40 and _reason_at(quarantined, 42) == "bad_encoding"
    assert "\\xe9" in quarantined["_raw"].iloc[0]  # the byte, escaped, for a person to see


def test_file_in_another_encoding_fails_naming_the_setting(tmp_path):
    path = tmp_path / "people.csv"
    lines = [f"P{i},Zoë Noël {i},30,café" for i in range(1, 21)]
    path.write_bytes(("\n".join([HEADER, *lines]) + "\n").encode("latin-1"))
    with pytest.raises(ValidationFailed, match=r"people\.csv: 20 of 20 rows .*bad_encoding ×20.*"
                                               r"set ingest\.encoding"):
        _run(path)
    kept, _ = _frames(_run(path, encoding="latin-1"), 20)
    assert kept["name"].iloc[0] == "Zoë Noël 1"


def test_wrong_delimiter_is_named(tmp_path):
    path = _write(tmp_path / "people.csv", [x.replace(",", ";") for x in _lines(5)],
                  header=HEADER.replace(",", ";"))
    with pytest.raises(InputError, match=r"people\.csv: line 1 reads as a single column with "
                                         r"delimiter ',', but ';' splits it into 4 columns; set "
                                         r"ingest\.delimiter=';'"):
        _run(path, delimiter=",")
    kept, _ = _frames(_run(path), 5)  # left unset, it is detected
    assert kept["name"].iloc[0] == "Person 1"


def test_ragged_rows_are_quarantined_with_line_numbers(tmp_path):
    lines = _lines(60)
    lines[9] = "P10,Person 10,30"  # one field short
    lines[19] = "P20,Smith, John,30,note"  # an unquoted comma: one field too many
    kept, quarantined = _frames(_run(_write(tmp_path / "people.csv", lines)), 60)
    assert len(kept) == 58
    assert _reason_at(quarantined, 11) == _reason_at(quarantined, 21) == "ragged_row"
    assert quarantined["_raw"].tolist() == ["P10,Person 10,30\n", "P20,Smith, John,30,note\n"]


def test_unclosed_quote_names_the_line(tmp_path):
    lines = _lines(30)
    lines[24] = 'P25,"Person 25,30'  # short of a field: no reading makes it a record
    with pytest.raises(InputError, match=r"people\.csv: line 26: a quoted field opens here and "
                                         r"never closes, so lines 26-31 read as one value; close "
                                         r"the quote"):
        _run(_write(tmp_path / "people.csv", lines), quoting="fields")


def test_unclosed_quote_whose_lines_stand_alone_quarantines_each_line(tmp_path):
    lines = _lines(30)
    lines[24] = 'P25,"Person 25,30,note'
    path = _write(tmp_path / "people.csv", lines)
    outcome = _run(path, quoting="fields", validate={"max_quarantine_rate": 0.5})
    kept, quarantined = _frames(outcome, 30)
    assert list(quarantined[SOURCE_LINE]) == list(range(26, 32))
    assert set(quarantined[REASON]) == {"unbalanced_quote"}
    # With quoting detected (the default), the quote is data and every line is a record.
    kept, quarantined = _frames(_run(path), 30)
    assert len(quarantined) == 0
    assert kept.loc[kept["id"] == "P25", "name"].iloc[0] == '"Person 25'


def test_blank_lines_and_quoted_newlines_keep_line_numbers(tmp_path):
    lines = _lines(6)
    lines[1] = 'P2,Person 2,30,"two\nlines"'
    lines.insert(4, "")
    kept, _ = _frames(_run(_write(tmp_path / "people.csv", lines)), 6)
    assert kept["note"].iloc[1] == "two\nlines"
    canonical = pd.read_parquet(tmp_path / "out" / "canonical.parquet")
    assert canonical[SOURCE_LINE].tolist() == [2, 3, 5, 6, 8, 9]


def test_missing_value_markers_are_configurable(tmp_path):
    lines = _lines(10)
    lines[3] = "P4,Person 4,30,?"
    kept, _ = _frames(_run(_write(tmp_path / "people.csv", lines),
                           missing_values=("", "?")), 10)
    assert kept["note"].isna().sum() == 1


def test_duplicate_header_names(tmp_path):
    path = _write(tmp_path / "people.csv", _lines(3), header="id,name,age,name")
    with pytest.raises(InputError, match=r"people\.csv: the header names 'name' twice \(columns 2 "
                                         r"and 4\); rename one"):
        _run(path)


def test_reserved_column_name(tmp_path):
    path = _write(tmp_path / "people.csv", _lines(3), header="id,name,age,_source_row")
    with pytest.raises(InputError, match=r"column 4 is named '_source_row', a name privgen "
                                         r"reserves"):
        _run(path)


# --- JSONL ---------------------------------------------------------------------------------

def test_one_bad_line_in_ten_thousand_jsonl(tmp_path):
    path = tmp_path / "people.jsonl"
    rows = [json.dumps({"id": f"P{i}", "name": f"Person {i}", "age": 20 + i % 50, "note": None})
            for i in range(1, 10_001)]
    rows[6_999] = '{"id": "P7000", "name": "Person 7000", "age": 30, "note": "cut'
    rows[8_999] = '["not", "an", "object"]'
    path.write_text("\n".join(rows) + "\n")
    kept, quarantined = _frames(_run(path), 10_000)
    assert len(kept) == 9_998
    assert _reason_at(quarantined, 7_000) == "bad_json"
    assert _reason_at(quarantined, 9_000) == "not_an_object"


# --- schema drift --------------------------------------------------------------------------

def test_renamed_column(tmp_path):
    path = _write(tmp_path / "people.csv", _lines(5), header="id,full_name,age,note")
    with pytest.raises(ValidationFailed, match=r"people\.csv: schema drift: expected columns "
                                               r"\[id, name, age, note\], found \[id, full_name, "
                                               r"age, note\]; missing: name; not in the contract: "
                                               r"full_name; 'full_name' sits where 'name' was "
                                               r"expected \(renamed\?\); fix the source"):
        _run(path)


def test_missing_column(tmp_path):
    path = _write(tmp_path / "people.csv", [x.rsplit(",", 1)[0] for x in _lines(5)],
                  header="id,name,age")
    with pytest.raises(ValidationFailed, match=r"schema drift: .*; missing: note; .*--infer"):
        _run(path)


def test_extra_column(tmp_path):
    path = _write(tmp_path / "people.csv", [x + ",x" for x in _lines(5)], header=HEADER + ",ssn")
    with pytest.raises(ValidationFailed, match=r"not in the contract: ssn; .*extra_columns: "):
        _run(path)
    ignoring = CONTRACT.model_copy(update={"extra_columns": "ignore"})
    kept, _ = _frames(_run(path, contract=ignoring), 5)
    assert "ssn" not in kept.columns


def test_type_change(tmp_path):
    lines = [f"P{i},Person {i},thirty,note" for i in range(1, 21)]
    with pytest.raises(ValidationFailed, match=r"20 of 20 rows .*type:age ×20.*did the column's "
                                               r"type change upstream"):
        _run(_write(tmp_path / "people.csv", lines))


def test_all_null_required_column(tmp_path):
    lines = [f"P{i},,{30},note" for i in range(1, 21)]
    with pytest.raises(ValidationFailed, match=r"people\.csv: column\(s\) name are empty in every "
                                               r"one of 20 rows.*expected: non-null; found: all "
                                               r"null.*mark them nullable"):
        _run(_write(tmp_path / "people.csv", lines))


# --- row-level failures --------------------------------------------------------------------

def test_duplicate_ids_across_chunks_keep_the_first(tmp_path):
    lines = _lines(100)
    lines[70] = lines[3].replace("Person 4", "Someone Else")  # P4 again, in a later chunk
    outcome = _run(_write(tmp_path / "people.csv", lines), chunk_rows=25,
                   validate={"chunk_rows": 30})
    kept, quarantined = _frames(outcome, 100)
    assert quarantined[SOURCE_ROW].tolist() == [71]
    assert quarantined[REASON].tolist() == ["be_unique:id"]
    assert (kept["id"] == "P4").sum() == 1


def test_out_of_range_values(tmp_path):
    lines = _lines(40)
    lines[5] = "P6,Person 6,-3,note"
    lines[6] = "P7,Person 7,400,note"
    kept, quarantined = _frames(_run(_write(tmp_path / "people.csv", lines)), 40)
    assert len(kept) == 38 and quarantined[REASON].tolist() == ["be_between:age"] * 2
    assert quarantined[SOURCE_ROW].tolist() == [6, 7]


def test_formula_like_strings_are_quarantined_not_rewritten(tmp_path):
    lines = _lines(100)
    payloads = ["=cmd|' /C calc'!A0", "+HYPERLINK(\"http://x\")", "@SUM(1+1)*cmd|' /C calc'!A0",
                "-2+3+cmd|' /C calc'!A0"]
    for i, p in enumerate(payloads):
        lines[10 + i] = f'P{11 + i},Person {11 + i},30,"{p.replace(chr(34), chr(34) * 2)}"'
    benign = ["+1 (555) 010-0199", "-5 degrees today", "@support thanks!", "- see (attached)"]
    for i, b in enumerate(benign):
        lines[30 + i] = f"P{31 + i},Person {31 + i},30,{b}"
    path = _write(tmp_path / "people.csv", lines)
    kept, quarantined = _frames(_run(path), 100)
    assert quarantined[SOURCE_ROW].tolist() == [11, 12, 13, 14] and "- see (attached)" in set(
        kept["note"])
    assert set(quarantined[REASON]) == {"formula:note"}
    assert quarantined["note"].tolist() == payloads  # quarantine keeps the raw value for review
    kept, quarantined = _frames(_run(path, validate={"formulas": "allow"}), 100)
    assert quarantined.empty and payloads[0] in set(kept["note"])


def test_ten_megabyte_field_is_quarantined(tmp_path):
    lines = _lines(30)
    lines[12] = f"P13,Person 13,30,{'x' * 10_000_000}"
    kept, quarantined = _frames(_run(_write(tmp_path / "people.csv", lines)), 30)
    assert len(kept) == 29 and _reason_at(quarantined, 14) == "field_too_long:note"


def test_quarantine_rate_over_threshold_fails_with_reasons(tmp_path):
    lines = [f"P{i},Person {i},{999 if i % 4 == 0 else 30},note" for i in range(1, 41)]
    path = _write(tmp_path / "people.csv", lines)
    with pytest.raises(ValidationFailed, match=r"10 of 40 rows \(25\.0%\) failed the contract, "
                                               r"above validate\.max_quarantine_rate=5\.0% \(top "
                                               r"reasons: be_between:age ×10\)"):
        _run(path)
    assert (tmp_path / "out" / "validation_report.json").exists()  # written before failing
    _frames(_run(path, validate={"max_quarantine_rate": 0.3}), 40)


# --- SQL (SQLite here; PostgreSQL in tests/integration/test_sql_source.py) -----------------

@pytest.fixture
def sqlite_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'people.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE people (id TEXT PRIMARY KEY, name TEXT, age INTEGER)")
        conn.exec_driver_sql("INSERT INTO people VALUES ('P1', 'Ann', 30), ('P2', 'Bo', 40)")
    engine.dispose()
    return url


@pytest.mark.parametrize("table", ["people; DROP TABLE people", 'people" --', "PEOPLE"])
def test_sql_identifier_injection(tmp_path, sqlite_url, table):
    cfg = IngestConfig(sql=SqlSource(url=sqlite_url, table=table))
    with pytest.raises(InputError, match=r"ingest\.sql\.table .* is not a table or view in "
                                         r"sqlite:///.*give the name exactly"):
        ingest(cfg, tmp_path / "o")
    cfg = IngestConfig(sql=SqlSource(url=sqlite_url, table="people", columns=("id", "age--")))
    with pytest.raises(InputError, match=r"ingest\.sql\.columns: 'age--' not in table 'people'"):
        ingest(cfg, tmp_path / "o")
    assert ingest(IngestConfig(sql=SqlSource(url=sqlite_url, table="people")),
                  tmp_path / "o").rows == 2  # the table is still there


@pytest.mark.parametrize("query, match", [
    ("DELETE FROM people", r"starts with 'DELETE'; it must be one read-only SELECT"),
    ("SELECT * FROM people; DROP TABLE people", r"more than one statement"),
    ("WITH d AS (SELECT 1) INSERT INTO people VALUES ('P3','x',1)", r"refused the read"),
])
def test_sql_query_must_be_read_only(tmp_path, sqlite_url, query, match):
    with pytest.raises(InputError, match=match):
        ingest(IngestConfig(sql=SqlSource(url=sqlite_url, query=query)), tmp_path / "o")
    assert ingest(IngestConfig(sql=SqlSource(url=sqlite_url, table="people")),
                  tmp_path / "o").rows == 2


def test_sql_values_are_bound_not_spliced(tmp_path, sqlite_url):
    cfg = IngestConfig(sql=SqlSource(url=sqlite_url, query="SELECT * FROM people WHERE name = :n",
                                     params={"n": "x' OR '1'='1"}))
    with pytest.raises(InputError, match=r"ingest\.sql: has no data rows"):
        ingest(cfg, tmp_path / "o")


def test_schema_of_parquet_types_is_read_as_text(tmp_path):
    path = tmp_path / "people.parquet"
    pq.write_table(pa.table({"id": ["P1", "P2"], "name": ["a", "b"], "age": [30, None],
                             "note": [None, "n"]}), path)
    kept, quarantined = _frames(_run(path, validate={"max_quarantine_rate": 0.5}), 2)
    assert kept["age"].tolist() == [30] and _reason_at_row(quarantined, 2) == "not_be_null:age"
